#!/bin/sh
# vmaflags-criu: one CRIU case in the test VM (conformance/vm/criu.py drives it over the serial
# port with `run`; installed as /usr/local/sbin/vmaflags-criu by rootfs.py).
#
#   vmaflags-criu case MODE SPLIT WORD...   dump and restore a process, leave it running
#   vmaflags-criu khugepaged                after two more full khugepaged scans: observe it, end it
#
# The process is `executor --hold`: it runs the script whose lines are the WORDs joined by
# spaces and split at ';', the first SPLIT steps first.  MODE is
#   plain        criu dump; criu restore
#   lazy         criu dump; criu lazy-pages -d; criu restore --lazy-pages
#   lazy-parent  criu pre-dump --track-mem after the first SPLIT steps, then the rest run;
#                criu dump --track-mem --prev-images-dir; then as lazy
# Output lines:
#   step N ret=.. get=.. thp=.. vmas=..   the script's own lines (the executor's format)
#   dumped|during|restored|khugepaged ret=0 get=.. thp=.. vmas=..
#                the process just before `criu dump`; just after `criu restore` returned; after
#                the lazy-pages daemon exited (plain: right after `during`); after two full
#                khugepaged scans (the caller tunes khugepaged to scan fast before that)
#   mark PHASE UPTIME   when a phase began (the guest's /proc/uptime)
# A failure prints "error WHAT" and the tail of CRIU's logs ("log FILE: LINE"), exits 1.
set -u
S=/tmp/vmaflags-criu
K=/sys/kernel/mm/transparent_hugepage/khugepaged

mark() { echo "mark $1 $(cut -d' ' -f1 /proc/uptime)"; }

fail() {
	echo "error $*"
	for f in "$S"/*.log; do
		[ -f "$f" ] && tail -n 12 "$f" | sed "s|^|log ${f##*/}: |"
	done
	[ -n "${pid:-}" ] && kill -9 "$pid" 2>/dev/null
	exit 1
}

# alive PID: the process exists and is no zombie
alive() { [ -d "/proc/$1" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null; }

# until_ok SECONDS COMMAND...: poll COMMAND every 50 ms until it succeeds, at most SECONDS
until_ok() {
	_i=$(($1 * 20))
	shift
	while ! "$@"; do
		_i=$((_i - 1))
		[ $_i -le 0 ] && return 1
		sleep 0.05
	done
}

lines() { [ "$(wc -l < "$S/report")" -gt "$1" ]; }
gone() { ! alive "$1"; }
scans() { [ "$(cat $K/full_scans)" -ge "$1" ]; }

# observe LABEL: the process appends its observation to the report on SIGUSR1
observe() {
	n=$(wc -l < "$S/report")
	kill -USR1 "$pid" 2>/dev/null || fail "the process $pid is gone before '$1'"
	until_ok 20 lines "$n" || fail "no observation from the process ($1)"
	echo "$1 $(tail -n 1 "$S/report" | cut -d' ' -f2-)"
}

criu_do() {  # LOG ARGS...: criu ARGS with its log in $S/LOG, at most 5 minutes
	log=$1
	shift
	timeout 300 criu "$@" -o "$S/$log" -v4 >>"$S/criu.out" 2>&1 || fail "criu $1 failed (exit $?)"
}

case "${1:-}" in
case)
	mode=$2 split=$3
	shift 3
	case "$mode" in plain|lazy|lazy-parent) ;; *) echo "error bad mode $mode"; exit 2 ;; esac
	rm -rf "$S"
	mkdir -p "$S/pre" "$S/img"
	printf '%s\n' "$*" | tr ';' '\n' > "$S/case.vmf"
	: > "$S/report"
	executor --hold "$S/report" "$S/case.vmf" "$split" </dev/null >"$S/steps" 2>"$S/stderr" &
	pid=$!
	echo "$pid" > "$S/pid"
	until_ok 60 grep -q '^ready 1' "$S/report" || fail "the process did not start: $(cat "$S/stderr")"
	parent=
	if [ "$mode" = lazy-parent ]; then
		mark pre-dump
		criu_do pre-dump.log pre-dump -t "$pid" -D "$S/pre" --track-mem
		parent="--track-mem --prev-images-dir ../pre"
	fi
	kill -USR2 "$pid"
	until_ok 60 grep -q '^ready 2' "$S/report" || fail "the process did not run its steps"
	sed 's/^/step /' "$S/steps"
	observe dumped
	mark dump
	# shellcheck disable=SC2086  # $parent is two options or none
	criu_do dump.log dump -t "$pid" -D "$S/img" $parent
	wait "$pid"
	mark restore
	if [ "$mode" = plain ]; then
		criu_do restore.log restore -D "$S/img" -d
	else
		criu_do lazy-pages.log lazy-pages -D "$S/img" -d --pidfile "$S/lazy.pid"
		criu_do restore.log restore -D "$S/img" --lazy-pages -d
	fi
	observe during
	if [ "$mode" != plain ]; then
		until_ok 120 gone "$(cat "$S/lazy.pid")" || fail "the lazy-pages daemon did not finish"
	fi
	mark restored
	observe restored
	;;
khugepaged)
	pid=$(cat "$S/pid") || fail "no case is running"
	alive "$pid" || fail "the restored process $pid is gone"
	mark khugepaged
	until_ok 60 scans $(($(cat $K/full_scans) + 2)) || fail "khugepaged did not scan twice in 60 s"
	observe khugepaged
	kill -TERM "$pid"
	until_ok 10 gone "$pid" || fail "the restored process $pid did not end"
	mark end
	;;
*)
	echo "error usage: vmaflags-criu case MODE SPLIT WORD... | vmaflags-criu khugepaged"
	exit 2
	;;
esac
