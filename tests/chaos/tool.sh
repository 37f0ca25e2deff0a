#!/bin/sh
# Tool handler of the chaos suite (runlane worker --tool-exec).
# stdin: the call, {"id","name","arguments","conversation_id","batch_id"}.
# stdout: the output, a pure function of the tool's name and arguments, so
# the suite can predict it: "<name>:<first 12 hex of sha256(arguments)>".
# When CHAOS_TOOL_LOG is set, one line per call is appended to it (call id,
# name, conversation, batch); a line is shorter than PIPE_BUF, so concurrent
# appends do not interleave.
set -eu
input=$(cat)
name=$(printf '%s' "$input" | jq -r '.name')
args=$(printf '%s' "$input" | jq -r '.arguments')
digest=$(printf '%s' "$args" | sha256sum | cut -c1-12)
if [ -n "${CHAOS_TOOL_LOG:-}" ]; then
  printf '%s\n' "$(printf '%s' "$input" | jq -c '{id, name, conversation_id, batch_id}')" >> "$CHAOS_TOOL_LOG"
fi
printf '%s:%s\n' "$name" "$digest"
