# Shared by the lab shims: every call is logged to $SHIM_LOG as one line (the command name and
# its arguments, then selected environment), the world the shims pretend to manage lives under
# $SHIM_STATE, and $SHIM_FAIL makes the call whose log line contains it fail as the real tool
# would. Nothing here runs a container or a VM.
set -euo pipefail
state="${SHIM_STATE:?}"
me="$(basename "$0")"
line="$me $*"
[ -n "${KIND_EXPERIMENTAL_DOCKER_NETWORK:-}" ] && line+=" [KIND_EXPERIMENTAL_DOCKER_NETWORK=$KIND_EXPERIMENTAL_DOCKER_NETWORK]"
[ -n "${KIND_EXPERIMENTAL_PROVIDER:-}" ] && line+=" [KIND_EXPERIMENTAL_PROVIDER=$KIND_EXPERIMENTAL_PROVIDER]"
echo "$line" >>"${SHIM_LOG:?}"
mkdir -p "$state"
fail_if_asked() {
  if [ -n "${SHIM_FAIL:-}" ] && [[ "$line" == *"$SHIM_FAIL"* ]]; then
    echo "$1" >&2
    exit "${2:-1}"
  fi
}
