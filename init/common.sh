# shellcheck shell=sh
# What the three boot modes share, sourced by /sbin/init, /sbin/arcbox-machine-init and
# /sbin/arcbox-storage-recovery (installed as /lib/arcbox/init-common.sh): the paths, console
# lines, power_off, reading the kernel command line, mounting the kernel filesystems, the
# debug console and the share. Each script sets LOG_PREFIX and BB before sourcing this file.
#
# Every program is run as `"$BB" APPLET …` or by its full path below: nothing depends on PATH or
# on the applet links, and the no-VM tests (tests/e2e/init_scripts.rs) replace exactly the path
# lines of this block with stand-ins that record their argv.
# PID 1 must never exit (the kernel panics): no `set -e`, every failure is handled, power_off
# never returns, and no special builtin is given a redirection that can fail.

# --- paths (the no-VM tests rewrite these lines) ---
CONSOLE=/dev/console
PROC_CMDLINE=/proc/cmdline
PROC_MOUNTS=/proc/mounts
AGENT=/arcbox/bin/arcbox-agent
PROGRAM_PATH=/sbin:/bin:/usr/sbin:/usr/bin
# --- end of paths ---

# The VirtioFS share of the host and where it is mounted.
SHARE_TAG=arcbox
SHARE_DIR=/arcbox
# The share may appear a moment after init starts; try this many times, one second apart.
SHARE_MOUNT_ATTEMPTS=5

# The programs we start (the agent, the distribution's init) find their tools here.
PATH=$PROGRAM_PATH
export PATH
# Kernel command line words are split by the shell: never expand them as file patterns.
set -f

log() {
    echo "$LOG_PREFIX: $*"
}

# Prints one console line with the reason and powers the VM off; never returns, even if
# poweroff fails or returns.
power_off() {
    log "FATAL: $*; powering off"
    "$BB" sync
    "$BB" poweroff -f
    while :; do
        "$BB" sleep 60
    done
}

# True when something is mounted on $1 (Debian's busybox has no `mountpoint` applet).
is_mounted() {
    [ -r "$PROC_MOUNTS" ] || return 1
    while read -r _source target _rest; do
        [ "$target" = "$1" ] && return 0
    done <"$PROC_MOUNTS"
    return 1
}

# Mounts filesystem type $1 on $2 unless something is mounted there already; false when it
# cannot.
mount_fs() {
    if is_mounted "$2"; then
        log "$2 already mounted"
    elif "$BB" mount -t "$1" "$1" "$2"; then
        log "mounted $1 on $2"
    else
        log "ERROR: cannot mount $1 on $2"
        return 1
    fi
}

# Mounts proc, sysfs and devtmpfs (an existing mount is kept), then moves our own input and
# output to the console. `mount_kernel_filesystems require`: each must really be mounted
# afterwards, else the VM powers off; `mount_kernel_filesystems tolerate`: boot goes on.
mount_kernel_filesystems() {
    for kernel_fs in proc:/proc sysfs:/sys devtmpfs:/dev; do
        mount_fs "${kernel_fs%%:*}" "${kernel_fs#*:}"
        if [ "$1" = require ] && ! is_mounted "${kernel_fs#*:}"; then
            power_off "${kernel_fs#*:} is not mounted (${kernel_fs%%:*})"
        fi
    done
    # A redirection that fails on `exec` ends the shell: try it in a subshell first.
    if [ -c "$CONSOLE" ] && (: <>"$CONSOLE") 2>/dev/null; then
        exec <>"$CONSOLE" >&0 2>&0
    fi
}

# Reads the kernel command line into CMDLINE.
read_cmdline() {
    CMDLINE=
    read -r CMDLINE <"$PROC_CMDLINE" || true
}

# True when the word $1 (or $1=1, =on, =yes) is on the kernel command line.
cmdline_flag() {
    case " $CMDLINE " in
    *" $1 "* | *" $1=1 "* | *" $1=on "* | *" $1=yes "*) return 0 ;;
    esac
    return 1
}

# Prints the value of the last `$1=VALUE` word of the kernel command line; false when there is
# none.
cmdline_value() {
    cmdline_found=1
    for cmdline_word in $CMDLINE; do
        case $cmdline_word in
        "$1="*)
            cmdline_found=0
            cmdline_result=${cmdline_word#*=}
            ;;
        esac
    done
    [ "$cmdline_found" -eq 0 ] || return 1
    printf '%s\n' "$cmdline_result"
}

# With `arcbox.debug_console` on the command line, starts a shell on the console beside the boot.
start_debug_console() {
    if cmdline_flag arcbox.debug_console; then
        log "debug console: starting a shell on the console (boot continues beside it)"
        "$BB" sh -i <>"$CONSOLE" >&0 2>&0 &
    fi
}

# Mounts the host's VirtioFS share on /arcbox, trying a few times; false when it cannot.
mount_share() {
    share_attempt=1
    while :; do
        if is_mounted "$SHARE_DIR"; then
            log "$SHARE_DIR already mounted"
            return 0
        fi
        if "$BB" mount -t virtiofs "$SHARE_TAG" "$SHARE_DIR"; then
            log "mounted virtiofs share $SHARE_TAG on $SHARE_DIR"
            return 0
        fi
        if [ "$share_attempt" -ge "$SHARE_MOUNT_ATTEMPTS" ]; then
            log "ERROR: cannot mount virtiofs share $SHARE_TAG on $SHARE_DIR after $share_attempt attempts"
            return 1
        fi
        share_attempt=$((share_attempt + 1))
        "$BB" sleep 1
    done
}

# True when the agent is an executable file.
agent_is_executable() {
    [ -f "$AGENT" ] && [ -x "$AGENT" ]
}
