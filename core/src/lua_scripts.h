/* lua_scripts.h - the Lua scripts of the redis store, embedded at build
 * time from core/lua (see cmake/EmbedLua.cmake). */
#ifndef RUNLANE_LUA_SCRIPTS_H
#define RUNLANE_LUA_SCRIPTS_H
#include <stddef.h>

typedef struct rl_lua_script {
    const char *name; /* file name without "-<numkeys>.lua" */
    int numkeys;
    const char *source;
} rl_lua_script_t;

extern const rl_lua_script_t rl_lua_scripts[];
extern const size_t rl_lua_scripts_count;

#endif
