# Sourced by start_syncer.sh and stop_syncer.sh: reads --log-dir (default:
# log) and --pid-file (default: <log-dir>/ccr_syncer.pid) from the arguments
# into $log_dir and $pid_file, and leaves the other arguments in $args.
parse_syncer_paths() {
    log_dir=log
    pid_file=
    args=()
    while [ $# -gt 0 ]; do
        case "$1" in
            --log-dir) log_dir=$2; shift 2 ;;
            --log-dir=*) log_dir=${1#*=}; shift ;;
            --pid-file) pid_file=$2; shift 2 ;;
            --pid-file=*) pid_file=${1#*=}; shift ;;
            *) args+=("$1"); shift ;;
        esac
    done
    pid_file=${pid_file:-$log_dir/ccr_syncer.pid}
}
