#!/bin/sh
# Entrypoint of the agent image: exec, so that SIGTERM from `docker stop` reaches the agent itself.
set -eu
exec /usr/local/bin/renderfleet-agent "$@"
