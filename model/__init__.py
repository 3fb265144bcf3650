"""The model: one definition of the kernel's rules (rules.py), evaluated concretely
(concrete.py) and in Z3 (symbolic.py).  See README.md in this folder."""
from .eras import ERAS, Era, era
from .syscalls import Script, ScriptError, parse_script

__all__ = ["ERAS", "Era", "era", "Script", "ScriptError", "parse_script"]
