/* help.c - help texts of the runlane command-line tool. Keep them in step
 * with core/cli/README.md. */
#include "cli.h"

#define GLOBAL_OPTIONS                                                                  \
    "Global options (accepted before or after the command):\n"                          \
    "  --store URL        where the queue lives: redis://[user:password@]host:port/db,\n" \
    "                     rediss://..., unix:///path, or memory (default: $RUNLANE_STORE,\n" \
    "                     else memory; the memory store lives only as long as this\n"     \
    "                     process, so use Redis to share a queue between commands)\n"    \
    "  -X KEY=VALUE       set any configuration key (repeatable; see 'runlane config'),\n" \
    "                     e.g. -X batch.window.ms=3000 -X key.prefix=myapp\n"             \
    "  -h, --help         show help\n"

#define EXIT_CODES                                                                      \
    "Exit codes:\n"                                                                     \
    "  0  success\n"                                                                    \
    "  1  runtime or store error (Redis unreachable, timeout, ...)\n"                   \
    "  2  usage error: bad command line, bad -X key or value, or input the library\n"   \
    "     rejects (invalid conversation id, message too large, bad JSON)\n"             \
    "  3  not found (no such dead letter)\n"                                            \
    "  4  the worker stopped, but some batch attempts failed or did not finish\n"

const char cli_help_main[] =
    "Usage: runlane [GLOBAL OPTIONS] COMMAND [ARGS]\n"
    "\n"
    "Queue chat messages per conversation, batch them by a quiet window, and run one\n"
    "batch per conversation at a time across processes.\n"
    "\n"
    "Commands:\n"
    "  enqueue CONVERSATION MESSAGE   queue a message (or --file F.jsonl for many)\n"
    "  touch CONVERSATION...          typing signal: restart the quiet window\n"
    "  status [CONVERSATION]          queue totals, or one conversation's state\n"
    "  dead list|retry|purge          inspect and handle dead-lettered batches\n"
    "  worker --exec CMD              run CMD for every batch (custom backend)\n"
    "  config                         every configuration key, its default and range\n"
    "  conversation create            create a Responses API conversation (prints its id)\n"
    "  thread create                  create an Assistants API thread (prints its id)\n"
    "  conversation get|map|forget    a conversation key's provider conversation\n"
    "  migrate KEY [--thread ID]      copy an Assistants thread into a Responses conversation\n"
    "  dashboard [--listen HOST:PORT] serve the web dashboard (loopback by default)\n"
    "  demo                           bursts batched per conversation, end to end\n"
    "  help [COMMAND]                 help of a command\n"
    "\n" GLOBAL_OPTIONS
    "  --version          print the version and the features of this build\n"
    "\n"
    "Environment:\n"
    "  RUNLANE_STORE      default of --store\n"
    "\n" EXIT_CODES
    "\n"
    "Run 'runlane COMMAND --help' for the options of a command.\n";

const char cli_help_enqueue[] =
    "Usage: runlane enqueue [OPTIONS] CONVERSATION MESSAGE\n"
    "       runlane enqueue [OPTIONS] --file FILE.jsonl\n"
    "\n"
    "Queues a message for a conversation and prints its message id on stdout.\n"
    "MESSAGE '-' reads the content from stdin. When the idempotency key was already\n"
    "used for the conversation, the first message's id is printed and '(duplicate)'\n"
    "is noted on stderr; nothing is stored twice.\n"
    "\n"
    "With --file, every non-empty line of FILE ('-' for stdin) is a JSON object\n"
    "{\"conversation_id\", \"content\", and optionally \"idempotency_key\",\n"
    "\"instructions\", \"metadata\"}. All lines are queued in one pipelined call; if\n"
    "one is invalid, nothing is stored. One id is printed per line, in order.\n"
    "\n"
    "Options:\n"
    "  -k, --idempotency-key K   the same key for the same conversation stores once\n"
    "  -i, --instructions S      per-turn instructions (the batch's last message wins)\n"
    "  -m, --metadata JSON       a JSON object of strings kept with the message\n"
    "  -f, --file FILE           queue every line of a JSON-lines file\n"
    "\n" GLOBAL_OPTIONS "\n" EXIT_CODES;

const char cli_help_touch[] =
    "Usage: runlane touch [OPTIONS] CONVERSATION...\n"
    "\n"
    "Typing signal: the user of each CONVERSATION is still active, so its quiet\n"
    "window restarts now (never beyond batch.max.wait.ms after its first pending\n"
    "message). Stores no message and prints nothing.\n"
    "\n" GLOBAL_OPTIONS "\n" EXIT_CODES;

const char cli_help_status[] =
    "Usage: runlane status [OPTIONS] [CONVERSATION]\n"
    "\n"
    "Without CONVERSATION: the queue's totals (pending messages, ready and in-flight\n"
    "conversations, dead letters, counters). With CONVERSATION: its pending count,\n"
    "in-flight batch, attempts, lease owner and expiry, due time and last error.\n"
    "Times are shown in UTC.\n"
    "\n"
    "Options:\n"
    "  --json               print the raw JSON (one line per refresh with --watch)\n"
    "  -w, --watch [SECS]   refresh every SECS seconds (default 2) until Ctrl-C;\n"
    "                       write --watch=SECS when a numeric CONVERSATION follows\n"
    "\n" GLOBAL_OPTIONS "\n" EXIT_CODES;

const char cli_help_dead[] =
    "Usage: runlane dead list  [--offset N] [--limit N] [--json]\n"
    "       runlane dead retry (ID | --all)\n"
    "       runlane dead purge (ID | --all)\n"
    "\n"
    "Dead letters are batches whose attempts were spent (max.attempts) or that failed\n"
    "for good. 'list' shows them oldest first; 'retry' puts a dead batch back in front\n"
    "of its conversation's pending messages with its attempts reset; 'purge' deletes\n"
    "it. The ID of a dead letter is its batch id.\n"
    "\n"
    "Run 'runlane dead list --help' (retry, purge) for details.\n"
    "\n" GLOBAL_OPTIONS "\n" EXIT_CODES;

const char cli_help_dead_list[] =
    "Usage: runlane dead list [OPTIONS]\n"
    "\n"
    "Lists dead-lettered batches, oldest first: id, conversation, attempts, time of\n"
    "death, message count and the last error.\n"
    "\n"
    "Options:\n"
    "  --offset N    skip the first N dead letters (default 0)\n"
    "  --limit N     show at most N (default 100)\n"
    "  --json        print the raw JSON array, messages included\n"
    "\n" GLOBAL_OPTIONS "\n" EXIT_CODES;

const char cli_help_dead_retry[] =
    "Usage: runlane dead retry (ID | --all)\n"
    "\n"
    "Puts dead letter ID (or every dead letter with --all) back in front of its\n"
    "conversation's pending messages, due at once, with attempts reset. Prints\n"
    "'retried N'. Exits with 3 when ID does not exist.\n"
    "\n"
    "Options:\n"
    "  --all         retry every dead letter\n"
    "\n" GLOBAL_OPTIONS "\n" EXIT_CODES;

const char cli_help_dead_purge[] =
    "Usage: runlane dead purge (ID | --all)\n"
    "\n"
    "Deletes dead letter ID (or every dead letter with --all) for good. Prints\n"
    "'purged N'. Exits with 3 when ID does not exist.\n"
    "\n"
    "Options:\n"
    "  --all         purge every dead letter\n"
    "\n" GLOBAL_OPTIONS "\n" EXIT_CODES;

const char cli_help_worker[] =
    "Usage: runlane worker [OPTIONS] --exec CMD\n"
    "\n"
    "Runs the worker: claims due conversations (one batch per conversation at a time,\n"
    "across every worker of the store) and, for each batch, runs CMD with /bin/sh -c:\n"
    "  stdin   the batch as JSON: {\"conversation_id\",\"batch_id\",\"attempt\",\n"
    "          \"messages\":[{\"id\",\"content\",\"ts_ms\",\"instructions\"?,\"metadata\"?}]}\n"
    "  env     RUNLANE_CONVERSATION_ID, RUNLANE_BATCH_ID, RUNLANE_ATTEMPT\n"
    "  stdout  passed through to the worker's stdout\n"
    "  stderr  passed through to the worker's stderr; its tail is the error of a\n"
    "          failed attempt\n"
    "Exit status 0 acknowledges the batch (its messages are done). Any other status\n"
    "fails the attempt: it is retried after a backoff until max.attempts, then\n"
    "dead-lettered (see 'runlane dead'). Each command runs in its own process group.\n"
    "One line per settled batch is logged to stderr.\n"
    "\n"
    "SIGINT or SIGTERM stops gracefully: nothing new is claimed, running commands\n"
    "finish (up to --drain-timeout), then the worker exits. A second signal ends\n"
    "running commands (SIGTERM to their process group) and fails their attempt.\n"
    "\n"
    "Options:\n"
    "  --backend NAME          custom (default), responses or assistants. With the\n"
    "                          HTTP backends runlane runs each turn itself against\n"
    "                          openai.base.url (-X openai.model=..., openai.api.key\n"
    "                          or OPENAI_API_KEY): every reply is printed as one JSON\n"
    "                          line on stdout ({conversation_id, batch_id, reply, ...})\n"
    "                          and then confirmed; --max-batches counts replies.\n"
    "  --tool-exec CMD         (HTTP backends) run CMD for every tool call: the call\n"
    "                          JSON {id, name, arguments, conversation_id, batch_id}\n"
    "                          on stdin, env RUNLANE_TOOL_NAME, RUNLANE_TOOL_CALL_ID;\n"
    "                          its stdout is the output; a non-zero exit sends an\n"
    "                          error output. The call id is an idempotency key: a\n"
    "                          tool may run more than once after a crash.\n"
    "  --print-deltas          (HTTP backends) print streamed text deltas on stderr\n"
    "  -e, --exec CMD          the command run for every batch (required with the\n"
    "                          custom backend)\n"
    "  -c, --concurrency N     most commands running at once (default: the\n"
    "                          worker.concurrency key, capped at 32; at most 1024)\n"
    "  --max-batches N         exit after N batches were settled (acked or failed);\n"
    "                          batches claimed beyond N are released, not run\n"
    "  --idle-exit SECS        exit after SECS seconds without any batch\n"
    "  --timeout SECS          end a command running longer than SECS (SIGTERM, then\n"
    "                          SIGKILL 5 s later) and fail its attempt (default: none)\n"
    "  --drain-timeout SECS    how long a graceful stop waits for running commands\n"
    "                          (default 30); their leases are released afterwards\n"
    "\n" GLOBAL_OPTIONS "\n" EXIT_CODES;

const char cli_help_config[] =
    "Usage: runlane config [--markdown | --json | --values]\n"
    "\n"
    "Prints every configuration key with its type, default, accepted range or values\n"
    "and description. Any key can be set with -X KEY=VALUE.\n"
    "\n"
    "Options:\n"
    "  --markdown    a markdown table (name, type, default, range/values,\n"
    "                description); the README's configuration reference is made of it\n"
    "  --json        the raw property table (runlane_conf_properties)\n"
    "  --values      the effective value of every key after RUNLANE_STORE, -X and\n"
    "                --store (secrets masked)\n"
    "\n" GLOBAL_OPTIONS "\n" EXIT_CODES;

const char cli_help_demo[] =
    "Usage: runlane demo [OPTIONS]\n"
    "\n"
    "Simulated users send bursts of messages (and typing signals) to several\n"
    "conversations; the worker batches each burst into one turn, runs one turn per\n"
    "conversation at a time, keeps messages that arrive mid-turn for the next turn,\n"
    "and the demo checks that every message was answered once, in order. The turn\n"
    "is simulated by this program (custom backend): no API key is needed, and on the\n"
    "default memory store no Redis either (--store redis://... works too).\n"
    "\n"
    "Options:\n"
    "  -n, --conversations N   simulated conversations (default 4, at most 1000)\n"
    "  --turn-ms MS            how long one simulated turn takes (default 400)\n"
    "  --window-ms MS          the quiet window, batch.window.ms (default 300)\n"
    "  -q, --quiet             print only the summary\n"
    "  --backend NAME          custom (default: this program runs the turn), or\n"
    "                          responses / assistants: runlane runs each turn against\n"
    "                          openai.base.url (conversations are created there first)\n"
    "                          and this program answers the tool calls\n"
    "  --emulator              the endpoint is runlane's OpenAI emulator: messages carry\n"
    "                          its tool-call marker so a turn calls a tool\n"
    "\n"
    "Exit status 0 when every message was answered exactly once and in order.\n"
    "\n" GLOBAL_OPTIONS "\n" EXIT_CODES;

const char cli_help_conversation[] =
    "Usage: runlane conversation create [--metadata JSON]\n"
    "       runlane conversation get KEY\n"
    "       runlane conversation map KEY PROVIDER_ID\n"
    "       runlane conversation forget KEY\n"
    "\n"
    "create: creates a conversation for the responses backend (POST\n"
    "{openai.base.url}/conversations) and prints its id (conv_...). Uses the openai.* and\n"
    "http.* keys (-X openai.base.url=..., API key from openai.api.key or OPENAI_API_KEY).\n"
    "\n"
    "Conversation keys: with the responses and assistants backends, a conversation id that\n"
    "is not a provider id (\"chat-42\", a phone number) gets its provider conversation\n"
    "(thread) on its first turn, recorded in the store. get prints the id KEY maps to (exit\n"
    "3 when none); map sets it (import an existing conversation or thread); forget removes\n"
    "it (the next turn creates a new one).\n"
    "\n" GLOBAL_OPTIONS "\n" EXIT_CODES;

const char cli_help_migrate[] =
    "Usage: runlane migrate KEY [--thread THREAD_ID]\n"
    "\n"
    "Migration off the Assistants API: copies the messages of the thread (--thread, else the\n"
    "thread KEY maps to, else KEY itself when it is a thread id), oldest first, into a new\n"
    "Responses conversation, then maps KEY to it, so the key's next turn with the responses\n"
    "backend continues there. Prints {\"conversation_id\",\"thread_id\",\"copied\",\"total\"}.\n"
    "Resumable: run it again after a failure and it copies only what is missing; once done it\n"
    "copies nothing. Run one migration of a key at a time, while no turn of the key runs.\n"
    "\n" GLOBAL_OPTIONS "\n" EXIT_CODES;

const char cli_help_dashboard[] =
    "Usage: runlane dashboard [--listen HOST:PORT] [--token TOKEN] [--read-only]\n"
    "                         [--history-interval SECS]\n"
    "\n"
    "Serves the web dashboard of the store (totals and their history, conversations by\n"
    "state, one conversation, dead letters; retry/purge dead letters, release a stuck\n"
    "lease) until SIGINT or SIGTERM. Prints \"runlane dashboard: listening on URL\" once\n"
    "it listens. Built only when libmicrohttpd was found.\n"
    "\n"
    "Options:\n"
    "  -l, --listen HOST:PORT  address to listen on (default 127.0.0.1:8080; port 0 picks\n"
    "                          a free one). A loopback address needs no token, and then\n"
    "                          only loopback Host headers are served (DNS rebinding).\n"
    "                          Any other address requires a token.\n"
    "  --token TOKEN           16..256 characters of A-Z a-z 0-9 - _ . ~ (or the\n"
    "                          RUNLANE_DASHBOARD_TOKEN environment variable, which other\n"
    "                          users cannot read in the process list). Every request must\n"
    "                          carry it: \"Authorization: Bearer TOKEN\", or open\n"
    "                          URL?token=TOKEN once and the browser keeps it in an\n"
    "                          HttpOnly cookie.\n"
    "  --read-only             refuse every action (403)\n"
    "  --history-interval SECS spacing of the totals history samples (default 10)\n"
    "\n" GLOBAL_OPTIONS "\n" EXIT_CODES;

const char cli_help_thread[] =
    "Usage: runlane thread create [--metadata JSON] | get KEY | map KEY ID | forget KEY\n"
    "\n"
    "Creates a thread for the assistants backend (POST {openai.base.url}/threads) and\n"
    "prints its id (thread_...), to use as the conversation id of enqueue. get, map and\n"
    "forget KEY work as with `runlane conversation` (one mapping per key).\n"
    "\n" GLOBAL_OPTIONS "\n" EXIT_CODES;
