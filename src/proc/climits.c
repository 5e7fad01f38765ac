#include "climits.h"

#include "alloc.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int get_int(const cJSON *o, const char *key, int min, int max, int *out) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
  if (v == NULL)
    return 0;
  if (!cJSON_IsNumber(v) || v->valuedouble != (double)(int)v->valuedouble || v->valuedouble < min ||
      v->valuedouble > max)
    return -EINVAL;
  *out = (int)v->valuedouble;
  return 0;
}

/* "none", "idle" or "best-effort:N". */
static int get_ionice(const cJSON *o, struct cap_climit *c) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "ionice");
  int level;
  char tail;
  if (v == NULL)
    return 0;
  if (!cJSON_IsString(v))
    return -EINVAL;
  if (strcmp(v->valuestring, "none") == 0) {
    c->ionice_class = 0;
  } else if (strcmp(v->valuestring, "idle") == 0) {
    c->ionice_class = 3;
  } else if (sscanf(v->valuestring, "best-effort:%d%c", &level, &tail) == 1 && level >= 0 &&
             level <= 7) {
    c->ionice_class = 2;
    c->ionice_level = level;
  } else {
    return -EINVAL;
  }
  return 0;
}

static int parse_class(const char *name, const cJSON *o, struct cap_climit *c) {
  memset(c, 0, sizeof(*c));
  if (!cJSON_IsObject(o) || strlen(name) == 0 || strlen(name) >= sizeof(c->name))
    return -EINVAL;
  snprintf(c->name, sizeof(c->name), "%s", name);
  for (const cJSON *it = o->child; it; it = it->next)
    if (strcmp(it->string, "nice") != 0 && strcmp(it->string, "ionice") != 0 &&
        strcmp(it->string, "memory_mb") != 0 && strcmp(it->string, "address_space_mb") != 0 &&
        strcmp(it->string, "threads") != 0)
      return -EINVAL;
  if (get_int(o, "nice", 0, 19, &c->nice) != 0 || get_ionice(o, c) != 0 ||
      get_int(o, "memory_mb", 0, 16777216, &c->memory_mb) != 0 ||
      get_int(o, "address_space_mb", 0, 16777216, &c->address_space_mb) != 0 ||
      get_int(o, "threads", 0, 1024, &c->threads) != 0)
    return -EINVAL;
  return 0;
}

int cap_climits_parse(const char *json, struct cap_climits *out, char *err, size_t errlen) {
  cJSON *root = cJSON_Parse(json ? json : "{}");
  memset(out, 0, sizeof(*out));
  if (!cJSON_IsObject(root))
    goto fail;
  for (const cJSON *it = root->child; it; it = it->next) {
    out->v = xrealloc(out->v, (out->n + 1) * sizeof(*out->v));
    if (parse_class(it->string, it, &out->v[out->n]) != 0) {
      snprintf(err, errlen,
               "class_limits: class \"%.31s\" must be {\"nice\":0-19,\"ionice\":\"none\"|\"idle\"|"
               "\"best-effort:0-7\",\"memory_mb\":N,\"address_space_mb\":N,\"threads\":0-1024}",
               it->string);
      cJSON_Delete(root);
      cap_climits_free(out);
      return -EINVAL;
    }
    out->n++;
  }
  cJSON_Delete(root);
  return 0;
fail:
  snprintf(err, errlen, "class_limits: must be a JSON object of classes");
  cJSON_Delete(root);
  return -EINVAL;
}

void cap_climits_free(struct cap_climits *l) {
  free(l->v);
  l->v = NULL;
  l->n = 0;
}

struct cap_climit cap_climits_get(const struct cap_climits *l, const char *cls) {
  struct cap_climit none;
  for (size_t i = 0; l && i < l->n; i++)
    if (strcmp(l->v[i].name, cls) == 0)
      return l->v[i];
  memset(&none, 0, sizeof(none));
  snprintf(none.name, sizeof(none.name), "%s", cls);
  return none;
}
