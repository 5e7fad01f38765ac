#include "keypolicy.h"

#include "alloc.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct cap_keypolicy {
  cJSON *root;
};

static int prefixes_ok(const cJSON *arr) {
  const cJSON *it;
  if (arr == NULL)
    return 1;
  if (!cJSON_IsArray(arr))
    return 0;
  cJSON_ArrayForEach(it, arr) {
    if (!cJSON_IsString(it) || it->valuestring[0] == '\0')
      return 0;
  }
  return 1;
}

int cap_keypolicy_parse(const char *json, struct cap_keypolicy **out, char *err, size_t errlen) {
  *out = NULL;
  if (json == NULL)
    return 0;
  cJSON *root = cJSON_Parse(json);
  const cJSON *tok;
  if (!cJSON_IsObject(root))
    goto fail;
  cJSON_ArrayForEach(tok, root) {
    if (!cJSON_IsObject(tok) || !prefixes_ok(cJSON_GetObjectItemCaseSensitive(tok, "input")) ||
        !prefixes_ok(cJSON_GetObjectItemCaseSensitive(tok, "output")))
      goto fail;
  }
  *out = xcalloc(1, sizeof(**out));
  (*out)->root = root;
  return 0;
fail:
  cJSON_Delete(root);
  snprintf(err, errlen,
           "token_prefixes: must map token names to {\"input\":[prefixes],\"output\":[prefixes]}");
  return -EINVAL;
}

void cap_keypolicy_free(struct cap_keypolicy *kp) {
  if (kp == NULL)
    return;
  cJSON_Delete(kp->root);
  free(kp);
}

int cap_keypolicy_allows(const struct cap_keypolicy *kp, const char *name, int output,
                         const char *key) {
  if (kp == NULL || name == NULL)
    return 1;
  const cJSON *tok = cJSON_GetObjectItemCaseSensitive(kp->root, name);
  if (tok == NULL)
    return 1;
  const cJSON *arr = cJSON_GetObjectItemCaseSensitive(tok, output ? "output" : "input");
  const cJSON *it;
  cJSON_ArrayForEach(it, arr) {
    size_t n = strlen(it->valuestring);
    if (strncmp(key, it->valuestring, n) == 0)
      return 1;
  }
  return 0; /* Listed, and no prefix matched (or none given for this side). */
}
