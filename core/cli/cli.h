/* cli.h - the runlane command-line tool: shared declarations.
 *
 * The tool is a thin user of the public API: it includes runlane.h and
 * nothing from core/src. JSON is read and written with cJSON, which the
 * library already depends on. */
#ifndef RUNLANE_CLI_H
#define RUNLANE_CLI_H

#include <stddef.h>
#include <stdint.h>

#include "runlane.h"

#if defined(__GNUC__)
#define CLI_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define CLI_PRINTF(f, a)
#endif

/* Exit codes (documented in `runlane --help` and core/cli/README.md). */
enum {
    CLI_EXIT_OK = 0,       /* success */
    CLI_EXIT_RUNTIME = 1,  /* runtime or store error (Redis unreachable, ...) */
    CLI_EXIT_USAGE = 2,    /* bad command line or input the library rejects */
    CLI_EXIT_NOTFOUND = 3, /* the dead letter (or other object) does not exist */
    CLI_EXIT_FAILURES = 4  /* worker stopped, but some batch attempts failed */
};

/* ---- options ---- */

enum { CLI_ARG_NONE = 0, CLI_ARG_REQUIRED = 1, CLI_ARG_OPTIONAL_NUMBER = 2 };

typedef struct cli_optspec {
    const char *lname; /* "limit" for --limit; NULL ends the table */
    int sname;         /* short letter or 0 */
    int arg;           /* CLI_ARG_* */
    int id;            /* returned by cli_next; > 0 */
} cli_optspec_t;

/* Returned by cli_next. */
#define CLI_POSITIONAL 0
#define CLI_END (-1)
#define CLI_HELP (-2)

/* Global state: options shared by every command. */
typedef struct cli_ctx {
    const char *store; /* --store URL, or NULL */
    const char **xkeys, **xvals; /* -X key=value, in order */
    size_t nx, capx;
    const char *cmd; /* "enqueue", "dead list", ... for messages */
} cli_ctx_t;

typedef struct cli_parser {
    cli_ctx_t *ctx;
    int argc;
    char **argv;
    int i;
    int only_positionals; /* after "--" */
} cli_parser_t;

void cli_parser_init(cli_parser_t *p, cli_ctx_t *ctx, int argc, char **argv);

/* Next option or positional argument of a command. Global options (--store,
 * -X) are consumed here wherever they appear. Returns an option id, with
 * its argument in *val (NULL for CLI_ARG_OPTIONAL_NUMBER when none was
 * given); CLI_POSITIONAL with the argument in *val; CLI_HELP for -h/--help;
 * CLI_END at the end. Bad usage prints a message and exits with 2. */
int cli_next(cli_parser_t *p, const cli_optspec_t *specs, const char **val);

/* Records a global option; returns 1 if `arg` (with its value) is one,
 * consuming the value from the parser. */
int cli_global_option(cli_parser_t *p, const char *arg);

/* ---- messages ---- */

/* "runlane: <cmd>: <message>" on stderr. */
void cli_err(const cli_ctx_t *ctx, const char *fmt, ...) CLI_PRINTF(2, 3);
/* Usage error: prints the message and a pointer to --help; exits with 2. */
#if defined(__GNUC__)
__attribute__((noreturn))
#endif
void cli_usage_fail(const cli_ctx_t *ctx, const char *fmt, ...) CLI_PRINTF(2, 3);
/* Prints the library's last error (secrets redacted) after `what` and
 * returns the exit code for `rc`. */
int cli_lib_fail(const cli_ctx_t *ctx, runlane_err_t rc, const char *what);
/* Exit code for a library error code. */
int cli_exit_for(runlane_err_t rc);
/* Copies `msg` into dst with the store password (if any) replaced by ***. */
void cli_redact(char *dst, size_t dst_size, const char *msg);
/* The effective store URL with the password replaced by ***. */
void cli_store_display(char *dst, size_t dst_size, const cli_ctx_t *ctx);

/* ---- library handles ---- */

/* The configuration from RUNLANE_STORE, -X and --store; exits with 2 on a
 * bad key or value. */
runlane_conf_t *cli_conf(const cli_ctx_t *ctx);
/* The effective store URL (--store, else -X store=, else RUNLANE_STORE,
 * else "memory"). */
const char *cli_store_url(const cli_ctx_t *ctx);
/* A client for `conf`; on failure prints the reason and returns NULL with
 * the exit code in *exit_out. */
runlane_t *cli_open(const cli_ctx_t *ctx, const runlane_conf_t *conf, int *exit_out);
/* Warns once on stderr that the memory store dies with this process. */
void cli_warn_memory_store(const cli_ctx_t *ctx);

/* ---- small helpers ---- */

/* Parses a non-negative integer (decimal) into *out; 1 on success. */
int cli_parse_u64(const char *s, uint64_t *out);
/* Parses a non-negative number of seconds (may have a fraction). */
int cli_parse_seconds(const char *s, double *out);
/* Monotonic milliseconds. */
int64_t cli_mono_ms(void);
/* Wall clock milliseconds since the epoch. */
int64_t cli_wall_ms(void);
/* "2025-01-31 12:34:56.789 UTC" for a time in ms since the epoch. */
void cli_format_time(char *dst, size_t dst_size, int64_t ms);
/* Whole file (or stdin for "-") into a malloc'd NUL-terminated buffer. */
char *cli_read_all(const char *path, size_t *len_out);
/* ---- parsing what commands read (parse.c; fuzzed by tests/fuzz/fuzz_cli.c) ---- */

/* Copies src into dst with control characters and bytes that are not UTF-8
 * escaped (\n, \x1b, \u009b...), the notation of the library's messages;
 * never cuts an escape or a character. Used by cli_err for every message. */
void cli_escape(char *dst, size_t dst_size, const char *src);
/* Replaces invalid UTF-8 and control characters (except \n, \t) in place. */
void cli_sanitize_utf8(char *s);

/* `enqueue --file`: JSON lines (one object with string "conversation_id"
 * and "content" per non-blank line) into one JSON array for
 * runlane_enqueue_many (malloc'd), with the line number of each message
 * in *line_of_out (malloc'd). CLI_EXIT_OK; CLI_EXIT_USAGE with the reason
 * (naming the line) in err; CLI_EXIT_RUNTIME when out of memory. */
int cli_jsonl_parse(const char *data, size_t len, char **array_out, size_t *n_out,
                    size_t **line_of_out, char *err, size_t err_size);

/* `worker --exec`: the last bytes of a command's stderr, for the batch's
 * error. */
#define CLI_TAIL_MAX 2048
#define CLI_ERROR_TAIL_MAX 1000
typedef struct cli_tail {
    char buf[CLI_TAIL_MAX];
    size_t len;
    int overflowed;
} cli_tail_t;
void cli_tail_add(cli_tail_t *t, const char *s, size_t n);
/* The last CLI_ERROR_TAIL_MAX bytes, trimmed, from a line start when one
 * is near, "..." when cut, valid UTF-8 without control characters. */
void cli_tail_text(const cli_tail_t *t, char *dst, size_t n);

/* `worker --tool-exec`: the output submitted for a tool call, from what the
 * command wrote (raw, len; read at most CLI_TOOL_OUTPUT_MAX + 1 bytes) and
 * its exit status: trailing newlines dropped, valid UTF-8; a failure is
 * "error: tool NAME exited with status N: OUTPUT". malloc'd; NULL when out
 * of memory. */
#define CLI_TOOL_OUTPUT_MAX (1024 * 1024)
char *cli_tool_output(const char *name, int status, const char *raw, size_t len);

/* ---- commands ---- */

int cli_cmd_enqueue(cli_ctx_t *ctx, int argc, char **argv);
int cli_cmd_touch(cli_ctx_t *ctx, int argc, char **argv);
int cli_cmd_status(cli_ctx_t *ctx, int argc, char **argv);
int cli_cmd_dead(cli_ctx_t *ctx, int argc, char **argv);
int cli_cmd_worker(cli_ctx_t *ctx, int argc, char **argv);
int cli_cmd_config(cli_ctx_t *ctx, int argc, char **argv);
int cli_cmd_demo(cli_ctx_t *ctx, int argc, char **argv);
int cli_cmd_conversation(cli_ctx_t *ctx, int argc, char **argv);
int cli_cmd_thread(cli_ctx_t *ctx, int argc, char **argv);
int cli_cmd_migrate(cli_ctx_t *ctx, int argc, char **argv);
int cli_cmd_dashboard(cli_ctx_t *ctx, int argc, char **argv);
/* The worker for the HTTP backends (cmd_http.c); max_replies 0 = no limit. */
int cli_http_worker(cli_ctx_t *ctx, const char *backend, const char *tool_exec, int print_deltas,
                    uint64_t max_replies, uint64_t concurrency, double idle_exit_s, double drain_s);

/* Help texts (help.c). */
extern const char cli_help_main[];
extern const char cli_help_enqueue[];
extern const char cli_help_touch[];
extern const char cli_help_status[];
extern const char cli_help_dead[];
extern const char cli_help_dead_list[];
extern const char cli_help_dead_retry[];
extern const char cli_help_dead_purge[];
extern const char cli_help_worker[];
extern const char cli_help_config[];
extern const char cli_help_demo[];
extern const char cli_help_conversation[];
extern const char cli_help_thread[];
extern const char cli_help_migrate[];
extern const char cli_help_dashboard[];

/* Prints a help text to stdout and returns 0. */
int cli_print_help(const char *text);

#endif
