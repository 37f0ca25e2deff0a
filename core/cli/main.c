/* main.c - the runlane command-line tool: global options and dispatch.
 *
 * Usage: runlane [--store URL] [-X key=value]... COMMAND [ARGS]
 * See help.c and core/cli/README.md. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const struct {
    const char *name;
    int (*fn)(cli_ctx_t *ctx, int argc, char **argv);
    const char *help;
} commands[] = {
    {"enqueue", cli_cmd_enqueue, cli_help_enqueue},
    {"touch", cli_cmd_touch, cli_help_touch},
    {"status", cli_cmd_status, cli_help_status},
    {"dead", cli_cmd_dead, cli_help_dead},
    {"worker", cli_cmd_worker, cli_help_worker},
    {"config", cli_cmd_config, cli_help_config},
    {"demo", cli_cmd_demo, cli_help_demo},
    {"conversation", cli_cmd_conversation, cli_help_conversation},
    {"thread", cli_cmd_thread, cli_help_thread},
    {"migrate", cli_cmd_migrate, cli_help_migrate},
    {"dashboard", cli_cmd_dashboard, cli_help_dashboard},
};
#define NCOMMANDS (sizeof(commands) / sizeof(commands[0]))

static int print_version(void) {
    unsigned int f = runlane_features();
    printf("runlane %s (librunlane %s)\nfeatures:", RUNLANE_CLI_VERSION, runlane_version_str());
    static const struct {
        unsigned int bit;
        const char *name;
    } feats[] = {
        {RUNLANE_FEATURE_REDIS, "redis"},   {RUNLANE_FEATURE_REDIS_TLS, "redis-tls"},
        {RUNLANE_FEATURE_HTTP, "http"},     {RUNLANE_FEATURE_HTTP_TLS, "http-tls"},
        {RUNLANE_FEATURE_CLUSTER, "cluster"},
    };
    int any = 0;
    for (size_t i = 0; i < sizeof(feats) / sizeof(feats[0]); i++) {
        if (f & feats[i].bit) {
            printf(" %s", feats[i].name);
            any = 1;
        }
    }
    printf("%s\n", any ? "" : " none");
    return CLI_EXIT_OK;
}

static int find_command(const char *name) {
    for (size_t i = 0; i < NCOMMANDS; i++)
        if (strcmp(commands[i].name, name) == 0) return (int)i;
    return -1;
}

int main(int argc, char **argv) {
    cli_ctx_t ctx;
    memset(&ctx, 0, sizeof(ctx));
    cli_parser_t p;
    cli_parser_init(&p, &ctx, argc - 1, argv + 1);

    /* Global options before the command. */
    while (p.i < p.argc) {
        const char *arg = p.argv[p.i];
        if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) return cli_print_help(cli_help_main);
        if (strcmp(arg, "--version") == 0 || strcmp(arg, "-V") == 0) return print_version();
        if (arg[0] != '-' || strcmp(arg, "-") == 0) break;
        if (strcmp(arg, "--") == 0) {
            p.i++;
            break;
        }
        p.i++;
        if (!cli_global_option(&p, arg)) cli_usage_fail(&ctx, "unknown option %s", arg);
    }
    if (p.i >= p.argc)
        cli_usage_fail(&ctx, "no command given (enqueue, touch, status, dead, worker, config, demo, conversation, thread, migrate, dashboard)");
    const char *name = p.argv[p.i++];
    if (strcmp(name, "help") == 0) {
        if (p.i >= p.argc) return cli_print_help(cli_help_main);
        const char *topic = p.argv[p.i];
        if (strcmp(topic, "dead") == 0 && p.i + 1 < p.argc) {
            const char *sub = p.argv[p.i + 1];
            if (strcmp(sub, "list") == 0) return cli_print_help(cli_help_dead_list);
            if (strcmp(sub, "retry") == 0) return cli_print_help(cli_help_dead_retry);
            if (strcmp(sub, "purge") == 0) return cli_print_help(cli_help_dead_purge);
        }
        int k = find_command(topic);
        if (k < 0) cli_usage_fail(&ctx, "help: unknown command \"%s\"", topic);
        return cli_print_help(commands[k].help);
    }
    if (strcmp(name, "version") == 0) return print_version();
    int k = find_command(name);
    if (k < 0) cli_usage_fail(&ctx, "unknown command \"%s\"", name);
    ctx.cmd = commands[k].name;
    int rc = commands[k].fn(&ctx, p.argc - p.i, p.argv + p.i);
    for (size_t i = 0; i < ctx.nx; i++) free((void *)ctx.xkeys[i]);
    free(ctx.xkeys);
    free(ctx.xvals);
    fflush(stdout);
    if (ferror(stdout)) {
        cli_err(&ctx, "cannot write to stdout");
        if (rc == CLI_EXIT_OK) rc = CLI_EXIT_RUNTIME;
    }
    return rc;
}
