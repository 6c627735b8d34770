# shellcheck shell=bash
# Variables set here are read by check, apply and revert, not all by each:
# shellcheck disable=SC2034
#
# lib.sh: shared by tuning/check, tuning/apply and tuning/revert (sourced, never run).
#
# Owns: the root prefix every path goes through, reading sysctls and sysfs values as
# plain files, parsing /proc/PID/limits and systemd unit files, the formulas behind
# every recommendation, and the table of rows that `check` prints and `apply` acts on.
#
# Environment (all optional):
#   OVATION_TUNING_ROOT     prefix for every path read or written (default: empty = /).
#   OVATION_TUNING_STATE    save file of apply/revert (default $ROOT/var/lib/ovation-tuning/saved.env).
#   OVATION_TUNING_UNIT     systemd unit file to read limits from (default: first of
#                           $ROOT/{etc/systemd/system,lib/systemd/system,usr/lib/systemd/system}/ovation.service).
#   OVATION_TUNING_LIMITS   a file in /proc/PID/limits format to use as the process limits.
#   OVATION_TUNING_PAGE_SIZE  page size in bytes for tcp_mem (default: getconf PAGESIZE, 4096 under a root prefix).
#   Tests only, honoured only together with a non-empty OVATION_TUNING_ROOT:
#   OVATION_TUNING_ALLOW_NONROOT=1  let apply/revert write the fake tree without root.
#   OVATION_TUNING_EUID=N           pretend to run with effective uid N.

if [[ -z "${BASH_VERSINFO[0]:-}" || "${BASH_VERSINFO[0]}" -lt 4 ]]; then
    echo "error: bash >= 4 is required" >&2
    exit 1
fi

export LC_ALL=C

OT_MAXNUM=9223372036854775807

# --- formula constants (README.md "The numbers" explains each) ---------------------------
OT_FD_HEADROOM=1024            # listeners, io_uring rings, eventfds, logs, operator API
OT_FILEMAX_HOST=65536          # descriptors for everything else on the host
OT_BACKLOG_MIN=4096
OT_BACKLOG_MAX=65535           # the largest backlog every supported kernel takes
OT_STORM_SECONDS=10            # reconnect storm: all viewers return within this window
OT_NETDEV_MIN=4096
OT_NETDEV_MAX=65536
OT_TCPMEM_MIN_KIB=4            # per connection: one page queued in one direction
OT_TCPMEM_PRESSURE_KIB=8       # one page in each direction
OT_TCPMEM_MAX_KIB=16           # room for slow readers before the kernel drops
OT_SLAB_BYTES=3584             # per socket, outside tcp_mem: tcp_sock + inode + file + dentry
OT_SMALL_BUF=16384             # per-socket rmem/wmem default for mostly idle push sockets
OT_PORTS_WIDEST=64512          # 1024..65535
OT_RFS_MIN=32768
OT_GLOMMIO_MIN_MEMLOCK=524288  # glommio refuses to start below this RLIMIT_MEMLOCK
OT_MEMLOCK_PER_EXECUTOR=$((2 * 1024 * 1024))   # 3 rings x 64 KiB registered buffer + rings, in MiB
OT_RING_BYTES_PER_EXECUTOR=$((64 * 1024))      # 3 rings at depth 128, charged before 5.12

OT_CONF_REL="etc/sysctl.d/90-ovation.conf"
OT_DROPIN_DIR_REL="etc/systemd/system/ovation.service.d"
OT_DROPIN_REL="$OT_DROPIN_DIR_REL/90-ovation-tuning.conf"

# --- messages and exits -------------------------------------------------------------------

ot_die() {
    echo "error: $*" >&2
    exit 1
}

ot_usage_error() {
    echo "usage error: $*" >&2
    echo "run '$OT_PROG --help' for the options" >&2
    exit 2
}

# --- root prefix --------------------------------------------------------------------------

OT_ROOT="${OVATION_TUNING_ROOT:-}"
OT_ROOT="${OT_ROOT%/}"
if [[ -n "$OT_ROOT" && ! -d "$OT_ROOT" ]]; then
    ot_die "OVATION_TUNING_ROOT=$OT_ROOT is not a directory"
fi

# ot_path REL: the real path of REL (relative to /) under the root prefix.
ot_path() {
    printf '%s/%s' "$OT_ROOT" "${1#/}"
}

ot_euid() {
    if [[ -n "$OT_ROOT" && -n "${OVATION_TUNING_EUID:-}" ]]; then
        printf '%s' "$OVATION_TUNING_EUID"
    else
        printf '%s' "$EUID"
    fi
}

# ot_require_root WHAT: refuse (exit 1) unless root, or the fake-tree test bypass is set.
ot_require_root() {
    if [[ -n "$OT_ROOT" && "${OVATION_TUNING_ALLOW_NONROOT:-}" == 1 ]]; then
        return 0
    fi
    if [[ "$(ot_euid)" != 0 ]]; then
        echo "error: $OT_PROG must run as root: it $1." >&2
        echo "       Nothing was changed. Run '$OT_PROG --dry-run ...' to see what it would do," >&2
        echo "       or run it with sudo." >&2
        exit 1
    fi
}

# --- numbers ------------------------------------------------------------------------------

# ot_uint VALUE: print VALUE as a plain decimal (leading zeros dropped; "unlimited",
# "infinity" and anything above 2^63-1 print 2^63-1). Fails for anything else, so no
# value read from a file ever reaches shell arithmetic unchecked.
ot_uint() {
    local v=$1
    case $v in
        unlimited | infinity)
            printf '%s' "$OT_MAXNUM"
            return 0
            ;;
    esac
    [[ $v =~ ^[0-9]+$ ]] || return 1
    v="${v#"${v%%[!0]*}"}"
    [[ -n $v ]] || v=0
    # Equal-length digit strings compare as numbers when compared as strings.
    # shellcheck disable=SC2071
    if ((${#v} > 19)) || { ((${#v} == 19)) && [[ $v > $OT_MAXNUM ]]; }; then
        v=$OT_MAXNUM
    fi
    printf '%s' "$v"
}

ot_max() { if (($1 > $2)); then printf '%s' "$1"; else printf '%s' "$2"; fi; }
ot_min() { if (($1 < $2)); then printf '%s' "$1"; else printf '%s' "$2"; fi; }
ot_ceil_div() { printf '%s' $((($1 + $2 - 1) / $2)); }
ot_clamp() { ot_min "$(ot_max "$1" "$2")" "$3"; }
ot_roundup() { printf '%s' $(((($1 + $2 - 1) / $2) * $2)); }

ot_next_pow2() {
    local n=1
    while ((n < $1)); do n=$((n * 2)); done
    printf '%s' "$n"
}

# ot_human BYTES: 1.5G style, for explanations only.
ot_human() {
    local b=$1
    if ((b >= OT_MAXNUM)); then
        printf 'unlimited'
    elif ((b >= 1 << 30)); then
        printf '%d.%dG' $((b >> 30)) $(((b % (1 << 30)) * 10 >> 30))
    elif ((b >= 1 << 20)); then
        printf '%dM' $(((b + (1 << 20) - 1) >> 20))
    elif ((b >= 1 << 10)); then
        printf '%dK' $(((b + 1023) >> 10))
    else
        printf '%d' "$b"
    fi
}

# --- files --------------------------------------------------------------------------------

# ot_read REL: the first line of a file under the root, whitespace collapsed to single
# spaces (tcp_mem reads "a<TAB>b<TAB>c"). Fails when the file is not readable.
ot_read() {
    local f line=""
    f=$(ot_path "$1")
    [[ -f $f && -r $f ]] || return 1
    IFS= read -r line <"$f" 2>/dev/null || [[ -n $line ]] || return 1
    line="${line//$'\t'/ }"
    while [[ $line == *"  "* ]]; do line="${line//  / }"; done
    line="${line# }"
    line="${line% }"
    printf '%s' "$line"
}

ot_sysctl_rel() {
    printf 'proc/sys/%s' "${1//.//}"
}

# ot_hex_of FILE: the exact bytes of FILE as lowercase hex (empty file: empty string).
ot_hex_of() {
    od -An -v -tx1 <"$1" | tr -d ' \n'
}

# ot_write_hex FILE HEX: write the bytes HEX encodes to FILE, in one write.
ot_write_hex() {
    local file=$1 hex=$2 esc="" i
    for ((i = 0; i < ${#hex}; i += 2)); do
        esc+="\\x${hex:i:2}"
    done
    printf '%b' "$esc" >"$file"
}

# --- CPU lists and masks ------------------------------------------------------------------

# ot_parse_cpulist LIST: print the CPUs of "0-3,8,10-11" one per line, ascending, unique.
ot_parse_cpulist() {
    local list=$1 part lo hi c
    [[ $list =~ ^[0-9]+(-[0-9]+)?(,[0-9]+(-[0-9]+)?)*$ ]] || return 1
    local -a parts
    IFS=, read -r -a parts <<<"$list"
    for part in "${parts[@]}"; do
        lo=${part%-*}
        hi=${part#*-}
        lo=$((10#$lo))
        hi=$((10#$hi))
        ((lo <= hi && hi < 8192)) || return 1
        for ((c = lo; c <= hi; c++)); do echo "$c"; done
    done | sort -n -u
}

# ot_format_cpulist CPU...: the compact list form ("0-3,8") of ascending CPUs.
ot_format_cpulist() {
    local out="" start="" prev="" c
    for c in "$@"; do
        if [[ -z $start ]]; then
            start=$c
        elif ((c != prev + 1)); then
            out+="${out:+,}$start"
            ((prev != start)) && out+="-$prev"
            start=$c
        fi
        prev=$c
    done
    if [[ -n $start ]]; then
        out+="${out:+,}$start"
        ((prev != start)) && out+="-$prev"
    fi
    printf '%s' "$out"
}

# ot_normalize_cpulist LIST: LIST in compact form, or LIST itself if it does not parse.
ot_normalize_cpulist() {
    local -a cpus
    if mapfile -t cpus < <(ot_parse_cpulist "$1") && ((${#cpus[@]} > 0)); then
        ot_format_cpulist "${cpus[@]}"
    else
        printf '%s' "$1"
    fi
}

# ot_mask CPU...: the hex bitmap the kernel takes for rps_cpus/xps_cpus: 32-bit groups,
# most significant first, separated by commas ("f", "1,00000000").
ot_mask() {
    local -a words=()
    local c w top i out
    for c in "$@"; do
        w=$((c / 32))
        words[w]=$((${words[w]:-0} | (1 << (c % 32))))
    done
    top=-1
    for i in "${!words[@]}"; do ((i > top)) && top=$i; done
    if ((top < 0)); then
        printf '0'
        return
    fi
    out=$(printf '%x' "${words[top]}")
    for ((i = top - 1; i >= 0; i--)); do
        out+=$(printf ',%08x' "${words[i]:-0}")
    done
    printf '%s' "$out"
}

# ot_normalize_mask MASK: MASK without commas and leading zeros, lowercase ("0" if empty).
ot_normalize_mask() {
    local m=${1//,/}
    m=${m,,}
    m="${m#"${m%%[!0]*}"}"
    printf '%s' "${m:-0}"
}

# --- limits -------------------------------------------------------------------------------

# ot_limits_field FILE NAME: "soft hard" of the line NAME ("Max open files") of a
# /proc/PID/limits file, each as ot_uint prints it. Fails if absent or malformed.
ot_limits_field() {
    local file=$1 name=$2 line rest soft hard
    [[ -r $file ]] || return 1
    while IFS= read -r line; do
        if [[ $line == "$name "* ]]; then
            rest=${line#"$name"}
            read -r soft hard _ <<<"$rest"
            soft=$(ot_uint "$soft") || return 1
            hard=$(ot_uint "$hard") || return 1
            printf '%s %s' "$soft" "$hard"
            return 0
        fi
    done <"$file"
    return 1
}

# ot_parse_size VALUE: bytes of a systemd size ("64M", "1G", "65536", "infinity").
ot_parse_size() {
    local v=$1 n unit
    if [[ $v == infinity ]]; then
        printf '%s' "$OT_MAXNUM"
        return 0
    fi
    [[ $v =~ ^([0-9]+)([KMGT]?)$ ]] || return 1
    n=$(ot_uint "${BASH_REMATCH[1]}") || return 1
    unit=${BASH_REMATCH[2]}
    case $unit in
        K) n=$((n << 10)) ;;
        M) n=$((n << 20)) ;;
        G) n=$((n << 30)) ;;
        T) n=$((n << 40)) ;;
    esac
    ((n >= 0)) || n=$OT_MAXNUM
    printf '%s' "$n"
}

# ot_find_unit: the ovation unit file in use, or nothing.
ot_find_unit() {
    if [[ -n "${OVATION_TUNING_UNIT:-}" ]]; then
        [[ -f $OVATION_TUNING_UNIT ]] && printf '%s' "$OVATION_TUNING_UNIT"
        return 0
    fi
    local rel
    for rel in etc/systemd/system lib/systemd/system usr/lib/systemd/system; do
        if [[ -f "$(ot_path "$rel/ovation.service")" ]]; then
            ot_path "$rel/ovation.service"
            return 0
        fi
    done
}

# ot_unit_value UNIT KEY: the value systemd would use for KEY: the last assignment in the
# unit and then its drop-ins in name order; an empty assignment resets it. Prints nothing
# when unset.
ot_unit_value() {
    local unit=$1 key=$2 value="" f line
    local -a files=("$unit")
    local d
    for d in "$unit.d" "$(ot_path "$OT_DROPIN_DIR_REL")"; do
        [[ -d $d ]] || continue
        for f in "$d"/*.conf; do
            [[ -f $f ]] && files+=("$f")
        done
    done
    local -A seen=()
    for f in "${files[@]}"; do
        [[ -n ${seen[$f]:-} ]] && continue
        seen[$f]=1
        while IFS= read -r line || [[ -n $line ]]; do
            line="${line#"${line%%[![:space:]]*}"}"
            if [[ $line =~ ^${key}[[:space:]]*=[[:space:]]*(.*)$ ]]; then
                value=${BASH_REMATCH[1]}
                value="${value%"${value##*[![:space:]]}"}"
            fi
        done <"$f"
    done
    printf '%s' "$value"
}

# --- processes ----------------------------------------------------------------------------

# ot_pids_named NAME: pids whose /proc/PID/comm is NAME (under the root prefix).
ot_pids_named() {
    local d comm
    for d in "$(ot_path proc)"/[0-9]*; do
        [[ -r "$d/comm" ]] || continue
        comm=""
        IFS= read -r comm <"$d/comm" 2>/dev/null || true
        [[ $comm == "$1" ]] && printf '%s\n' "${d##*/}"
    done
    return 0
}

# --- arguments ----------------------------------------------------------------------------

OT_CONNECTIONS=100000
OT_SHARDS=""
OT_NIC=""
OT_CPUS=""
OT_ROLE=server
OT_PID=""
OT_JSON=0
OT_DRY_RUN=0
OT_FORCE=0
OT_KEEP_BUFFERS=0

# ot_parse_target_args MODE ARGS...: parse the options of check (MODE=check) or apply
# (MODE=apply). Exits 2 on a usage error.
ot_parse_target_args() {
    local mode=$1
    shift
    while (($# > 0)); do
        case $1 in
            -h | --help)
                ot_usage
                exit 0
                ;;
            --connections | --shards | --nic | --cpus | --role | --pid)
                (($# >= 2)) || ot_usage_error "$1 needs a value"
                case $1 in
                    --connections) OT_CONNECTIONS=$2 ;;
                    --shards) OT_SHARDS=$2 ;;
                    --nic) OT_NIC=$2 ;;
                    --cpus) OT_CPUS=$2 ;;
                    --role) OT_ROLE=$2 ;;
                    --pid) OT_PID=$2 ;;
                esac
                shift 2
                continue
                ;;
            --connections=* | --shards=* | --nic=* | --cpus=* | --role=* | --pid=*)
                local opt=${1%%=*} val=${1#*=}
                shift
                set -- "$opt" "$val" "$@"
                continue
                ;;
            --json)
                [[ $mode == check ]] || ot_usage_error "--json is an option of check"
                OT_JSON=1
                ;;
            --dry-run)
                [[ $mode == apply ]] || ot_usage_error "--dry-run is an option of apply and revert"
                OT_DRY_RUN=1
                ;;
            --force)
                [[ $mode == apply ]] || ot_usage_error "--force is an option of apply"
                OT_FORCE=1
                ;;
            --keep-buffers)
                [[ $mode == apply ]] || ot_usage_error "--keep-buffers is an option of apply"
                OT_KEEP_BUFFERS=1
                ;;
            *) ot_usage_error "unknown argument '$1'" ;;
        esac
        shift
    done

    if ! [[ $OT_CONNECTIONS =~ ^[0-9]+$ ]] || ((${#OT_CONNECTIONS} > 12)) || ((10#$OT_CONNECTIONS == 0)); then
        ot_usage_error "--connections takes a positive integer (at most 12 digits), not '$OT_CONNECTIONS'"
    fi
    OT_CONNECTIONS=$((10#$OT_CONNECTIONS))
    case $OT_ROLE in
        server | loadgen) ;;
        *) ot_usage_error "--role is 'server' or 'loadgen', not '$OT_ROLE'" ;;
    esac
    if [[ -n $OT_PID ]]; then
        [[ $OT_PID =~ ^[1-9][0-9]{0,9}$ ]] || ot_usage_error "--pid takes a process id, not '$OT_PID'"
    fi
    if [[ -n $OT_NIC ]]; then
        [[ $OT_NIC =~ ^[A-Za-z0-9_.:@-]{1,15}$ && $OT_NIC != . && $OT_NIC != .. ]] ||
            ot_usage_error "--nic takes an interface name, not '$OT_NIC'"
    fi

    # The CPUs ovation's shards may use: its allowed set (default: all online CPUs).
    local cpulist=$OT_CPUS
    if [[ -z $cpulist ]]; then
        cpulist=$(ot_read sys/devices/system/cpu/online) ||
            ot_die "cannot read $(ot_path sys/devices/system/cpu/online); pass --cpus LIST"
    fi
    mapfile -t OT_ALLOWED_CPUS < <(ot_parse_cpulist "$cpulist")
    ((${#OT_ALLOWED_CPUS[@]} > 0)) || {
        if [[ -n $OT_CPUS ]]; then
            ot_usage_error "--cpus takes a CPU list like 0-3,8, not '$OT_CPUS'"
        fi
        ot_die "cannot parse the online CPU list '$cpulist'"
    }
    if [[ -z $OT_SHARDS ]]; then
        OT_SHARDS=${#OT_ALLOWED_CPUS[@]}
    fi
    if ! [[ $OT_SHARDS =~ ^[0-9]+$ ]] || ((${#OT_SHARDS} > 5)) || ((10#$OT_SHARDS == 0)); then
        ot_usage_error "--shards takes a positive integer, not '$OT_SHARDS'"
    fi
    OT_SHARDS=$((10#$OT_SHARDS))
    ((OT_SHARDS <= ${#OT_ALLOWED_CPUS[@]})) ||
        ot_usage_error "--shards $OT_SHARDS exceeds the ${#OT_ALLOWED_CPUS[@]} CPUs of the allowed set ($(ot_format_cpulist "${OT_ALLOWED_CPUS[@]}")): ovation pins one shard per CPU"
    OT_SHARD_CPUS=("${OT_ALLOWED_CPUS[@]:0:OT_SHARDS}")

    if [[ -n $OT_NIC && ! -d "$(ot_path "sys/class/net/$OT_NIC")" ]]; then
        ot_die "no network interface '$OT_NIC' ($(ot_path "sys/class/net/$OT_NIC") does not exist)"
    fi
}

# --- the rows -----------------------------------------------------------------------------
#
# One row per setting: name, current value, recommendation, status, why, and (for apply)
# the file to write and the value to write. Status: ok, LOW (below what the target needs),
# DIFF (steering differs from the shard layout), ADVISE (not fatal, apply still sets it),
# info. check exits 1 when any row is LOW or DIFF.

OT_R_NAME=()
OT_R_CUR=()
OT_R_REC=()
OT_R_STATUS=()
OT_R_WHY=()
OT_R_PATH=()
OT_R_VALUE=()
OT_R_KIND=()  # sysctl, sysfs, unit: how apply persists the value
OT_NOTES=()

# ot_row NAME CURRENT RECOMMENDED STATUS WHY [KIND REL VALUE]
ot_row() {
    OT_R_NAME+=("$1")
    OT_R_CUR+=("$2")
    OT_R_REC+=("$3")
    OT_R_STATUS+=("$4")
    OT_R_WHY+=("$5")
    OT_R_KIND+=("${6:-}")
    OT_R_PATH+=("${7:-}")
    OT_R_VALUE+=("${8:-}")
}

ot_note() {
    OT_NOTES+=("$1")
}

# ot_sysctl_min KEY NEED WHY: a one-number sysctl that must be at least NEED.
ot_sysctl_min() {
    local key=$1 need=$2 why=$3 rel cur n
    rel=$(ot_sysctl_rel "$key")
    if ! cur=$(ot_read "$rel"); then
        ot_row "$key" "absent" ">= $need" info "not on this kernel. $why"
        return 0
    fi
    if n=$(ot_uint "$cur") && ((n >= need)); then
        ot_row "$key" "$cur" ">= $need" ok "$why" sysctl "$rel" "$need"
    else
        ot_row "$key" "$cur" ">= $need" LOW "$why" sysctl "$rel" "$need"
    fi
}

# ot_triple_read REL: three numbers of a triple sysctl, space separated. Fails otherwise.
ot_triple_read() {
    local cur a b c
    cur=$(ot_read "$1") || return 1
    read -r a b c _ <<<"$cur"
    a=$(ot_uint "$a") && b=$(ot_uint "$b") && c=$(ot_uint "$c") || return 1
    printf '%s %s %s' "$a" "$b" "$c"
}

# --- evaluation ---------------------------------------------------------------------------

ot_kernel_before() {  # ot_kernel_before MAJOR MINOR: true if the running kernel is older
    local rel maj min
    rel=$(ot_read proc/sys/kernel/osrelease) || return 1
    [[ $rel =~ ^([0-9]+)\.([0-9]+) ]] || return 1
    maj=${BASH_REMATCH[1]}
    min=${BASH_REMATCH[2]}
    ((10#$maj < $1 || (10#$maj == $1 && 10#$min < $2)))
}

ot_page_size() {
    local p=${OVATION_TUNING_PAGE_SIZE:-}
    if [[ -z $p ]]; then
        if [[ -z $OT_ROOT ]]; then p=$(getconf PAGESIZE 2>/dev/null || echo 4096); else p=4096; fi
    fi
    if ! p=$(ot_uint "$p") || ((p < 1024)); then
        ot_die "page size '$p' is not a number of bytes >= 1024"
    fi
    printf '%s' "$p"
}

# ot_targets: compute every recommended number from the target (see README.md).
ot_targets() {
    local c=$OT_CONNECTIONS s=$OT_SHARDS
    OT_NEED_FD=$(ot_roundup $((c + (c + 9) / 10 + OT_FD_HEADROOM)) 1024)
    OT_NEED_FILEMAX=$((OT_NEED_FD + OT_FILEMAX_HOST))
    OT_NEED_BACKLOG=$(ot_clamp "$(ot_ceil_div "$c" $((s * OT_STORM_SECONDS)))" $OT_BACKLOG_MIN $OT_BACKLOG_MAX)
    OT_NEED_NETDEV=$(ot_clamp "$(ot_ceil_div "$c" $((s * 4)))" $OT_NETDEV_MIN $OT_NETDEV_MAX)
    OT_PAGE=$(ot_page_size)
    OT_NEED_TCPMEM="$(ot_ceil_div $((c * OT_TCPMEM_MIN_KIB * 1024)) "$OT_PAGE") $(ot_ceil_div $((c * OT_TCPMEM_PRESSURE_KIB * 1024)) "$OT_PAGE") $(ot_ceil_div $((c * OT_TCPMEM_MAX_KIB * 1024)) "$OT_PAGE")"
    OT_NEED_PORTS=$(ot_min "$c" $OT_PORTS_WIDEST)
    OT_NEED_CONNTRACK=$((2 * c))
    OT_NEED_RFS=$(ot_next_pow2 "$(ot_max "$c" $OT_RFS_MIN)")
    OT_REC_MEMLOCK=$(((s + 1) * OT_MEMLOCK_PER_EXECUTOR))
    OT_NEED_MEMLOCK=$OT_GLOMMIO_MIN_MEMLOCK
    OT_OLD_KERNEL=0
    if ot_kernel_before 5 12; then
        OT_OLD_KERNEL=1
        OT_NEED_MEMLOCK=$(ot_max $OT_GLOMMIO_MIN_MEMLOCK $(((s + 1) * OT_RING_BYTES_PER_EXECUTOR)))
    fi
}

ot_eval_descriptors() {
    ot_sysctl_min fs.file-max "$OT_NEED_FILEMAX" \
        "system-wide open files: ovation's $OT_NEED_FD plus $OT_FILEMAX_HOST for the rest of the host"
    ot_sysctl_min fs.nr_open "$OT_NEED_FD" \
        "ceiling on any process's RLIMIT_NOFILE: LimitNOFILE above it fails to start the unit"
}

# The limits ovation runs with: a running ovation's, else those of this shell.
ot_eval_process_limits() {
    local file label binding=1 unit pids
    unit=$(ot_find_unit)
    if [[ -n "${OVATION_TUNING_LIMITS:-}" ]]; then
        file=$OVATION_TUNING_LIMITS
        label="limits file"
    elif [[ -n $OT_PID ]]; then
        file=$(ot_path "proc/$OT_PID/limits")
        label="pid $OT_PID"
    else
        mapfile -t pids < <(ot_pids_named ovation)
        if ((${#pids[@]} > 0)); then
            file=$(ot_path "proc/${pids[0]}/limits")
            label="ovation pid ${pids[0]}"
            ((${#pids[@]} > 1)) && ot_note "several ovation processes run (${pids[*]}); limits shown for ${pids[0]}"
        else
            file=$(ot_path proc/self/limits)
            label="this shell"
            if [[ -n $unit ]]; then
                binding=0
                ot_note "ovation is not running; the limits of this shell are shown for information: under systemd the unit's LimitNOFILE/LimitMEMLOCK apply"
            fi
        fi
    fi

    local fd mem soft hard status
    local fd_why="one descriptor per connection, +10% for reconnect churn, +$OT_FD_HEADROOM for listeners, rings, logs, the operator API"
    if fd=$(ot_limits_field "$file" "Max open files"); then
        read -r soft hard <<<"$fd"
        status=ok
        ((soft >= OT_NEED_FD)) || status=LOW
        ((binding == 1)) || status=info
        local extra=""
        if ((soft < OT_NEED_FD && hard >= OT_NEED_FD)); then
            extra=" (hard limit $hard suffices: raise the soft limit)"
        fi
        ot_row "nofile soft ($label)" "$soft" ">= $OT_NEED_FD" "$status" "$fd_why$extra"
    else
        ot_row "nofile soft ($label)" "unreadable" ">= $OT_NEED_FD" "$([[ $binding == 1 ]] && echo LOW || echo info)" "cannot read 'Max open files' from $file"
    fi

    local mem_why
    if ((OT_OLD_KERNEL)); then
        mem_why="kernel before 5.12 charges io_uring rings to RLIMIT_MEMLOCK: need $(ot_human "$OT_NEED_MEMLOCK") ((shards+1) executors x 3 rings; glommio refuses below 512K); $(ot_human "$OT_REC_MEMLOCK") also registers glommio's 64K I/O buffer per ring"
    else
        mem_why="glommio refuses to start below 512K; kernel >= 5.12 charges rings to the memory cgroup, not memlock; $(ot_human "$OT_REC_MEMLOCK") = (shards+1) x (3 rings x 64K registered I/O buffers + the rings) (socket I/O works without them)"
    fi
    if mem=$(ot_limits_field "$file" "Max locked memory"); then
        read -r soft hard <<<"$mem"
        if ((soft < OT_NEED_MEMLOCK)); then
            status=LOW
        elif ((soft < OT_REC_MEMLOCK)); then
            status=ADVISE
        else
            status=ok
        fi
        ((binding == 1)) || status=info
        ot_row "memlock soft ($label)" "$(ot_human "$soft")" ">= $(ot_human "$OT_REC_MEMLOCK")" "$status" "$mem_why"
    else
        ot_row "memlock soft ($label)" "unreadable" ">= $(ot_human "$OT_REC_MEMLOCK")" "$([[ $binding == 1 ]] && echo LOW || echo info)" "cannot read 'Max locked memory' from $file"
    fi

    # The unit's own settings, and what apply would put in its drop-in.
    if [[ -z $unit ]]; then
        ot_row "systemd LimitNOFILE" "no unit" ">= $OT_NEED_FD" info "no ovation.service found; see tuning/ovation.service"
        ot_row "systemd LimitMEMLOCK" "no unit" ">= $(ot_human "$OT_REC_MEMLOCK")" info "no ovation.service found; see tuning/ovation.service"
        return 0
    fi
    local v n
    v=$(ot_unit_value "$unit" LimitNOFILE)
    if [[ -z $v ]]; then
        ot_row "systemd LimitNOFILE" "unset (soft 1024)" ">= $OT_NEED_FD" LOW "$fd_why; unset means systemd's DefaultLimitNOFILE, soft 1024 (in $unit)" unit LimitNOFILE "$OT_NEED_FD"
    elif n=$(ot_uint "${v%%:*}") && ((n >= OT_NEED_FD)); then
        ot_row "systemd LimitNOFILE" "$v" ">= $OT_NEED_FD" ok "$fd_why (in $unit)"
    else
        ot_row "systemd LimitNOFILE" "$v" ">= $OT_NEED_FD" LOW "$fd_why (in $unit)" unit LimitNOFILE "$OT_NEED_FD"
    fi
    local rec_m="$((OT_REC_MEMLOCK >> 20))M"
    v=$(ot_unit_value "$unit" LimitMEMLOCK)
    if [[ -z $v ]]; then
        ot_row "systemd LimitMEMLOCK" "unset" ">= $(ot_human "$OT_REC_MEMLOCK")" LOW "unset means the default: 8M on systemd >= 253, 64K before (glommio needs 512K); $mem_why" unit LimitMEMLOCK "$rec_m"
    elif n=$(ot_parse_size "${v%%:*}"); then
        if ((n < OT_NEED_MEMLOCK)); then
            status=LOW
        elif ((n < OT_REC_MEMLOCK)); then
            status=ADVISE
        else
            status=ok
        fi
        ot_row "systemd LimitMEMLOCK" "$v" ">= $(ot_human "$OT_REC_MEMLOCK")" "$status" "$mem_why" unit LimitMEMLOCK "$rec_m"
    else
        ot_row "systemd LimitMEMLOCK" "$v" ">= $(ot_human "$OT_REC_MEMLOCK")" LOW "unparsable value; $mem_why" unit LimitMEMLOCK "$rec_m"
    fi
}

ot_eval_backlogs() {
    local per_s=$(((OT_CONNECTIONS + OT_SHARDS * OT_STORM_SECONDS - 1) / (OT_SHARDS * OT_STORM_SECONDS)))
    ot_sysctl_min net.core.somaxconn "$OT_NEED_BACKLOG" \
        "caps each reuseport listener's accept queue: 1 s of a reconnect storm ($OT_CONNECTIONS viewers in ${OT_STORM_SECONDS} s over $OT_SHARDS shards = $per_s/s per shard), $OT_BACKLOG_MIN..$OT_BACKLOG_MAX"
    ot_sysctl_min net.ipv4.tcp_max_syn_backlog "$OT_NEED_BACKLOG" \
        "half-open connections per listener during the same storm; overflow falls back to SYN cookies"
    ot_sysctl_min net.ipv4.tcp_syncookies 1 \
        "SYN cookies keep accepting when the SYN queue overflows in a storm"
    ot_sysctl_min net.core.netdev_max_backlog "$OT_NEED_NETDEV" \
        "per-CPU input queue (RPS lands here): a quarter of one shard's ACK burst after a group-cast to all $OT_CONNECTIONS viewers, $OT_NETDEV_MIN..$OT_NETDEV_MAX"
}

ot_eval_memory() {
    local rel=proc/sys/net/ipv4/tcp_mem cur need_a need_b need_c a b c
    read -r need_a need_b need_c <<<"$OT_NEED_TCPMEM"
    local why="pages of $OT_PAGE bytes for all TCP buffers: $OT_CONNECTIONS x ${OT_TCPMEM_MIN_KIB}K (min) / ${OT_TCPMEM_PRESSURE_KIB}K (pressure) / ${OT_TCPMEM_MAX_KIB}K (max): a busy socket holds at least one page per direction"
    if cur=$(ot_triple_read "$rel"); then
        read -r a b c <<<"$cur"
        local want
        want="$(ot_max "$a" "$need_a") $(ot_max "$b" "$need_b") $(ot_max "$c" "$need_c")"
        if ((a >= need_a && b >= need_b && c >= need_c)); then
            ot_row net.ipv4.tcp_mem "$cur" ">= $OT_NEED_TCPMEM" ok "$why" sysctl "$rel" "$want"
        else
            ot_row net.ipv4.tcp_mem "$cur" ">= $OT_NEED_TCPMEM" LOW "$why" sysctl "$rel" "$want"
        fi
    else
        ot_row net.ipv4.tcp_mem "unreadable" ">= $OT_NEED_TCPMEM" info "cannot read $(ot_path "$rel"). $why"
    fi

    local key
    for key in tcp_rmem tcp_wmem; do
        rel=proc/sys/net/ipv4/$key
        local dir=receive
        [[ $key == tcp_wmem ]] && dir=send
        why="default $dir buffer of each socket: $OT_SMALL_BUF bytes caps an idle push socket's worst-case queue; cost: a socket starts with a smaller window (autotuning still grows it up to max)"
        if ! cur=$(ot_triple_read "$rel"); then
            ot_row "net.ipv4.$key" "unreadable" "x $OT_SMALL_BUF x" info "cannot read $(ot_path "$rel"). $why"
            continue
        fi
        read -r a b c <<<"$cur"
        local want_min
        want_min=$(ot_min "$a" $OT_SMALL_BUF)
        local want
        want="$want_min $OT_SMALL_BUF $(ot_max "$c" $OT_SMALL_BUF)"
        if ((b <= OT_SMALL_BUF)); then
            ot_row "net.ipv4.$key" "$cur" "$a <= $OT_SMALL_BUF $c" ok "$why"
        else
            [[ $OT_KEEP_BUFFERS == 1 ]] && why="$why (kept: --keep-buffers)"
            local kind=sysctl
            [[ $OT_KEEP_BUFFERS == 1 ]] && kind=""
            ot_row "net.ipv4.$key" "$cur" "$want" ADVISE "$why" $kind "$rel" "$want"
        fi
    done

    # The total, against the host's memory.
    local total_kib est
    est=$((OT_CONNECTIONS * (OT_TCPMEM_PRESSURE_KIB * 1024 + OT_SLAB_BYTES)))
    if total_kib=$(ot_read proc/meminfo) && [[ $total_kib =~ ^MemTotal:\ ([0-9]+)\ kB ]]; then
        local mem=$((10#${BASH_REMATCH[1]} * 1024))
        local st=ok
        ((est * 2 <= mem)) || st=ADVISE
        ot_row "kernel memory estimate" "$(ot_human "$mem") RAM" "$(ot_human "$est")" "$st" "$OT_CONNECTIONS x (${OT_TCPMEM_PRESSURE_KIB}K buffers + 3.5K socket slab) should stay under half of RAM"
    fi
}

ot_eval_ports() {
    local rel=proc/sys/net/ipv4/ip_local_port_range cur lo hi width
    local why="ephemeral ports: a load generator needs one per connection per (source IP, server ip:port)"
    if ! cur=$(ot_read "$rel") || ! read -r lo hi <<<"$cur" || ! lo=$(ot_uint "$lo") || ! hi=$(ot_uint "$hi"); then
        ot_row net.ipv4.ip_local_port_range "unreadable" "1024 65535" info "$why"
        return 0
    fi
    width=$((hi - lo + 1))
    if [[ $OT_ROLE == server ]]; then
        ot_row net.ipv4.ip_local_port_range "$cur" "(server: any)" info "$why; a server only accepts, so it needs none (use --role loadgen on load generators)"
        return 0
    fi
    if ((OT_CONNECTIONS > OT_PORTS_WIDEST)); then
        ot_note "$OT_CONNECTIONS connections exceed the $OT_PORTS_WIDEST ports of one source address: the load generator needs $(ot_ceil_div "$OT_CONNECTIONS" $OT_PORTS_WIDEST) source addresses (e.g. 127.0.0.x) or server ports"
    fi
    if ((width >= OT_NEED_PORTS)); then
        ot_row net.ipv4.ip_local_port_range "$cur" ">= $OT_NEED_PORTS ports" ok "$why (width now $width)"
    else
        ot_row net.ipv4.ip_local_port_range "$cur" "1024 65535" LOW "$why (width now $width); keep listening ports out with net.ipv4.ip_local_reserved_ports" sysctl "$rel" "1024 65535"
    fi
}

ot_eval_conntrack() {
    local rel=proc/sys/net/netfilter/nf_conntrack_max cur n
    if ! cur=$(ot_read "$rel"); then
        ot_row "conntrack" "not loaded" "-" info "nf_conntrack is not loaded: no table to overflow (check again if a firewall or NAT loads it)"
        return 0
    fi
    ot_sysctl_min net.netfilter.nf_conntrack_max "$OT_NEED_CONNTRACK" \
        "one entry per tracked connection; after a mass reconnect the old ones linger 120 s (TIME_WAIT) beside the new: 2 x $OT_CONNECTIONS, ~300 bytes each"
    local final=$OT_NEED_CONNTRACK
    if n=$(ot_uint "$cur") && ((n > final)); then final=$n; fi
    ot_sysctl_min net.netfilter.nf_conntrack_buckets "$(ot_ceil_div "$final" 4)" \
        "hash buckets: nf_conntrack_max / 4 keeps chains at most 4 long when full (8 bytes per bucket)"
}

# --- packet steering ----------------------------------------------------------------------

ot_queue_dirs() {  # ot_queue_dirs NIC PREFIX: queue names (rx-0 ...) in numeric order
    local d
    for d in "$(ot_path "sys/class/net/$1/queues")"/"$2"-*; do
        [[ -d $d ]] && printf '%s\n' "${d##*/}"
    done | sort -t- -k2,2n
}

# ot_nic_irqs NIC: "irq queue kind name" per queue IRQ of NIC in /proc/interrupts; kind is
# rx (rx or combined TxRx) or tx. Lines whose name has no queue number are skipped.
ot_nic_irqs() {
    local nic=$1 line irq name kind q esc
    esc=$(printf '%s' "$nic" | sed 's/[].[^$*+?(){}|\\]/\\&/g')
    local f
    f=$(ot_path proc/interrupts)
    [[ -r $f ]] || return 0
    while IFS= read -r line; do
        [[ $line =~ ^[[:space:]]*([0-9]+): ]] || continue
        irq=${BASH_REMATCH[1]}
        name=${line##*[[:space:]]}
        [[ $name =~ (^|[^[:alnum:]])$esc([^[:alnum:]]|$) ]] || continue
        [[ $name =~ ([0-9]+)$ && $name != "$nic" ]] || continue
        q=$((10#${BASH_REMATCH[1]}))
        kind=rx
        if [[ ${name,,} == *tx* && ${name,,} != *rx* ]]; then kind=tx; fi
        printf '%s %s %s %s\n' "$irq" "$q" "$kind" "$name"
    done <"$f"
}

ot_eval_steering() {
    local nic=$OT_NIC
    [[ -n $nic ]] || return 0
    local -a rxq txq sc=("${OT_SHARD_CPUS[@]}")
    mapfile -t rxq < <(ot_queue_dirs "$nic" rx)
    mapfile -t txq < <(ot_queue_dirs "$nic" tx)
    local R=${#rxq[@]} T=${#txq[@]} S=${#sc[@]}
    if ((R == 0)); then
        ot_row "$nic steering" "no rx queues" "-" info "$(ot_path "sys/class/net/$nic/queues") lists no rx queues: nothing to steer"
        return 0
    fi

    local -a irq_lines
    mapfile -t irq_lines < <(ot_nic_irqs "$nic")
    local -A rx_irq=() tx_irq=() irq_name=()
    local l irq q kind name
    for l in "${irq_lines[@]}"; do
        read -r irq q kind name <<<"$l"
        irq_name[$irq]=$name
        if [[ $kind == rx ]]; then rx_irq[$q]=$irq; else tx_irq[$q]=$irq; fi
    done

    local mode
    if ((R >= S && ${#rx_irq[@]} > 0)); then
        mode=RSS
        local why="$R rx queues >= $S shards: the NIC's RSS hash picks the queue and each queue's IRQ is pinned to one shard CPU, so the SYN is processed on the CPU whose shard's reuseport listener accepts it; RPS stays off (it would add a cross-CPU hop per packet)"
        ((R > S)) && why="$why. $R queues on $S CPUs load them unevenly unless $((R % S)) == 0: prefer 'ethtool -L $nic combined $S' (or 'ethtool -X $nic equal $S')"
        ot_row "$nic steering mode" "$R rx, $T tx queues" "RSS + IRQ affinity" info "$why"
    else
        mode=RPS
        local why="$R rx queue(s) < $S shards: RPS hashes each flow to one shard CPU in software, RFS (flow table $OT_NEED_RFS) keeps its packets there, and reuseport CPU steering makes that CPU's shard accept it"
        ((R >= S)) && why="$R rx queues but no IRQ of '$nic' named in /proc/interrupts, so queue IRQs cannot be pinned to shard CPUs: using RPS (pin the IRQs yourself and re-run to use RSS)"
        ot_row "$nic steering mode" "$R rx, $T tx queues" "RPS + RFS" info "$why"
        ot_sysctl_min net.core.rps_sock_flow_entries "$OT_NEED_RFS" \
            "RFS global flow table: the next power of two >= the $OT_CONNECTIONS connections (4 bytes per entry)"
    fi

    local all_mask flow_cnt i cur want cpu rel
    all_mask=$(ot_mask "${sc[@]}")
    flow_cnt=$(ot_next_pow2 "$(ot_ceil_div "$OT_NEED_RFS" "$R")")
    for ((i = 0; i < R; i++)); do
        q=${rxq[i]#rx-}
        rel="sys/class/net/$nic/queues/${rxq[i]}/rps_cpus"
        want=0
        [[ $mode == RPS ]] && want=$all_mask
        if cur=$(ot_read "$rel"); then
            if [[ $(ot_normalize_mask "$cur") == "$(ot_normalize_mask "$want")" ]]; then
                ot_row "$nic ${rxq[i]} rps_cpus" "$cur" "$want" ok "$([[ $mode == RPS ]] && echo "spread flows over the shard CPUs $(ot_format_cpulist "${sc[@]}")" || echo "RPS off under RSS")" sysfs "$rel" "$want"
            else
                ot_row "$nic ${rxq[i]} rps_cpus" "$cur" "$want" DIFF "$([[ $mode == RPS ]] && echo "spread flows over the shard CPUs $(ot_format_cpulist "${sc[@]}")" || echo "RPS off under RSS")" sysfs "$rel" "$want"
            fi
        else
            ot_row "$nic ${rxq[i]} rps_cpus" "absent" "$want" info "kernel without CONFIG_RPS?"
        fi
        if [[ $mode == RPS ]]; then
            rel="sys/class/net/$nic/queues/${rxq[i]}/rps_flow_cnt"
            local n
            if cur=$(ot_read "$rel"); then
                if n=$(ot_uint "$cur") && ((n >= flow_cnt)); then
                    ot_row "$nic ${rxq[i]} rps_flow_cnt" "$cur" ">= $flow_cnt" ok "RFS flow table of this queue: rps_sock_flow_entries / $R queues" sysfs "$rel" "$flow_cnt"
                else
                    ot_row "$nic ${rxq[i]} rps_flow_cnt" "$cur" ">= $flow_cnt" LOW "RFS flow table of this queue: rps_sock_flow_entries / $R queues" sysfs "$rel" "$flow_cnt"
                fi
            fi
        fi
        # The queue's IRQ: one shard CPU (RSS), or spread over the shard CPUs (RPS).
        irq=${rx_irq[$q]:-}
        if [[ -n $irq ]]; then
            if ((R >= S)); then cpu=${sc[i % S]}; else cpu=${sc[i * S / R]}; fi
            ot_irq_row "$irq" "${irq_name[$irq]}" "$cpu" "$mode"
        fi
    done

    # XPS: every shard CPU transmits on one queue of its own where there are enough.
    if ((T > 1)); then
        local -a txcpus=()
        local k n_k
        n_k=$(ot_max "$S" "$T")
        for ((k = 0; k < n_k; k++)); do
            txcpus[k % T]="${txcpus[k % T]:-} ${sc[k % S]}"
        done
        for ((i = 0; i < T; i++)); do
            local -a cpus
            read -r -a cpus <<<"${txcpus[i]:-}"
            mapfile -t cpus < <(printf '%s\n' "${cpus[@]}" | sort -n -u)
            want=$(ot_mask "${cpus[@]}")
            rel="sys/class/net/$nic/queues/${txq[i]}/xps_cpus"
            local xwhy
            xwhy="transmit from CPU $(ot_format_cpulist "${cpus[@]}") on this queue: no lock contention between shards"
            if cur=$(ot_read "$rel"); then
                if [[ $(ot_normalize_mask "$cur") == "$(ot_normalize_mask "$want")" ]]; then
                    ot_row "$nic ${txq[i]} xps_cpus" "$cur" "$want" ok "$xwhy" sysfs "$rel" "$want"
                else
                    ot_row "$nic ${txq[i]} xps_cpus" "$cur" "$want" DIFF "$xwhy" sysfs "$rel" "$want"
                fi
            fi
            q=${txq[i]#tx-}
            irq=${tx_irq[$q]:-}
            if [[ -n $irq ]]; then
                ot_irq_row "$irq" "${irq_name[$irq]}" "${cpus[0]}" "$mode"
            fi
        done
    else
        ot_row "$nic xps" "$T tx queue" "-" info "one transmit queue: XPS has nothing to choose"
    fi

    if ((${#irq_lines[@]} == 0)); then
        ot_note "no IRQ in $(ot_path proc/interrupts) names '$nic' (mlx5 and virtio name them mlx5_comp*/virtioN-input.*): pin them to the shard CPUs by hand"
    fi
    local -a balancers
    mapfile -t balancers < <(ot_pids_named irqbalance)
    if ((${#balancers[@]} > 0)); then
        ot_row "irqbalance" "running (pid ${balancers[0]})" "not moving $nic IRQs" ADVISE "irqbalance rewrites smp_affinity: exclude the NIC's IRQs (IRQBALANCE_ARGS=--banirq=N per IRQ) or stop it"
    fi
}

# ot_irq_row IRQ NAME CPU MODE
ot_irq_row() {
    local irq=$1 name=$2 cpu=$3 mode=$4 rel cur why
    rel="proc/irq/$irq/smp_affinity_list"
    if [[ $mode == RSS ]]; then
        why="$name on shard CPU $cpu: its flows belong to shard $cpu's listener"
    else
        why="$name interrupt spread over the shard CPUs"
    fi
    if cur=$(ot_read "$rel"); then
        if [[ $(ot_normalize_cpulist "$cur") == "$cpu" ]]; then
            ot_row "irq $irq smp_affinity_list" "$cur" "$cpu" ok "$why" sysfs "$rel" "$cpu"
        else
            ot_row "irq $irq smp_affinity_list" "$cur" "$cpu" DIFF "$why" sysfs "$rel" "$cpu"
        fi
    else
        ot_row "irq $irq smp_affinity_list" "absent" "$cpu" info "$why; $(ot_path "$rel") is missing"
    fi
}

# ot_evaluate: fill the rows for the parsed target.
ot_evaluate() {
    ot_targets
    ot_eval_descriptors
    ot_eval_process_limits
    ot_eval_backlogs
    ot_eval_memory
    ot_eval_ports
    ot_eval_conntrack
    ot_eval_steering
}

ot_target_line() {
    local k
    k=$(ot_read proc/sys/kernel/osrelease || echo unknown)
    printf 'target: %s connections, %s shards on CPUs %s, role %s%s; kernel %s; root %s\n' \
        "$OT_CONNECTIONS" "$OT_SHARDS" "$(ot_format_cpulist "${OT_SHARD_CPUS[@]}")" "$OT_ROLE" \
        "${OT_NIC:+, nic $OT_NIC}" "$k" "${OT_ROOT:-/}"
}

# --- the save file of apply and revert ----------------------------------------------------

OT_STATE="${OVATION_TUNING_STATE:-$(ot_path var/lib/ovation-tuning/saved.env)}"

# The only files apply writes, and so the only ones revert will touch.
OT_STATE_PATH_RE='^(proc/sys/[A-Za-z0-9_/-]+|proc/irq/[0-9]+/smp_affinity_list|sys/class/net/[A-Za-z0-9_.:@-]+/queues/(rx|tx)-[0-9]+/(rps_cpus|rps_flow_cnt|xps_cpus)|etc/sysctl\.d/90-ovation\.conf|etc/systemd/system/ovation\.service\.d/90-ovation-tuning\.conf)$'

OT_S_REL=()
OT_S_VAL=()   # "ABSENT" or "hex:<bytes>"

# ot_state_load FILE: read and validate a save file into OT_S_REL/OT_S_VAL; dies on any
# line that is not a valid entry, before anything is written.
ot_state_load() {
    local file=$1 line rel val n=0
    OT_S_REL=()
    OT_S_VAL=()
    while IFS= read -r line || [[ -n $line ]]; do
        n=$((n + 1))
        [[ -z $line || $line == "#"* ]] && continue
        read -r rel val _ <<<"$line"
        if ! [[ $rel =~ $OT_STATE_PATH_RE && $rel != *..* ]]; then
            ot_die "$file line $n: '$rel' is not a path apply writes; refusing to use this save file"
        fi
        if ! [[ $val == ABSENT || ($val =~ ^hex:([0-9a-f][0-9a-f])*$) ]]; then
            ot_die "$file line $n: the saved value of $rel is malformed; refusing to use this save file"
        fi
        OT_S_REL+=("$rel")
        OT_S_VAL+=("$val")
    done <"$file"
}

# ot_readable_value HEX: the first line of the bytes HEX encodes, for comments and output.
ot_readable_value() {
    local hex=$1 esc="" i out
    for ((i = 0; i < ${#hex} && i < 400; i += 2)); do
        esc+="\\x${hex:i:2}"
    done
    out=$(printf '%b' "$esc" | head -n 1 | tr '\t' ' ')
    printf '%s' "$out"
}
