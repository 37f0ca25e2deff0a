/* conf.h - the property table and typed access to a conf (internal). */
#ifndef RUNLANE_CONF_H
#define RUNLANE_CONF_H

#include <stdint.h>

#include "runlane.h"

typedef enum rl_ptype { RL_T_STRING, RL_T_INT, RL_T_ENUM, RL_T_BOOL, RL_T_FLOAT, RL_T_JSON } rl_ptype_t;

typedef struct rl_prop {
    const char *name;
    rl_ptype_t type;
    const char *def;   /* default as a string */
    int64_t min, max;  /* int range; float range as min/max * 1 (whole numbers) */
    const char *enums; /* "a|b|c" for RL_T_ENUM */
    int secret;        /* masked in get/dump, never logged */
    const char *doc;
} rl_prop_t;

extern const rl_prop_t rl_props[];
extern const int rl_props_count;

struct runlane_conf_s {
    char **values; /* rl_props_count entries; NULL = default */
};

/* Typed reads of a validated conf (the key must exist: programming error
 * otherwise). */
const char *rl_conf_str(const runlane_conf_t *conf, const char *key);
int64_t rl_conf_int(const runlane_conf_t *conf, const char *key);
double rl_conf_float(const runlane_conf_t *conf, const char *key);
int rl_conf_bool(const runlane_conf_t *conf, const char *key);

/* Fixes the defaults that depend on the environment or on other keys
 * (OPENAI_BASE_URL; backend from openai.assistant.id) into `conf`, the
 * client's own copy, at runlane_new(). RUNLANE_ERR_INVALID_VALUE (message
 * in errstr and runlane_error_last()) when OPENAI_BASE_URL is not a valid
 * openai.base.url. */
runlane_err_t rl_conf_resolve(runlane_conf_t *conf, char *errstr, size_t errstr_size);

#endif
