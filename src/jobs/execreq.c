#include "execreq.h"

#include "alloc.h"
#include "jsonw.h"
#include "key.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const cap_execreq_capabilities[] = {"ffmpeg-render", "ffprobe", NULL};
const char *const cap_execreq_events[] = {"started", "progress", "succeeded",
                                          "failed",  "canceled", NULL};

/* The longest a client may ask /exec to wait before it answers 202. */
#define WAIT_MAX_S 90

static const char *const known_fields[] = {
    "capability", "input_key", "output_key",      "preset",       "output_prefix",
    "wait",       "async",     "idempotency_key", "callback_url", "callback_events"};

__attribute__((format(printf, 5, 6))) static int err(enum cap_err *code, enum cap_err c, char *msg,
                                                     size_t msglen, const char *fmt, ...) {
  va_list ap;
  *code = c;
  va_start(ap, fmt);
  vsnprintf(msg, msglen, fmt, ap);
  va_end(ap);
  return -EINVAL;
}

/* Returns 1 when every string in the JSON text is one cJSON reports
 * faithfully: no raw control characters (JSON forbids them) and no \u0000
 * escape (cJSON would cut the string short there, so "a\u0000/../x" would
 * pass for "a"). */
static int strings_clean(const char *s, size_t n) {
  int in_str = 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (!in_str) {
      in_str = c == '"';
      continue;
    }
    if (c < 0x20)
      return 0;
    if (c == '"') {
      in_str = 0;
    } else if (c == '\\' && i + 1 < n) {
      if (s[i + 1] == 'u' && i + 5 < n && memcmp(s + i + 2, "0000", 4) == 0)
        return 0;
      i++;
    }
  }
  return 1;
}

/* Copies the string field name into *out if present; checks type and
 * length (maxlen 0: any length, the caller checks). */
static int get_string(const cJSON *root, const char *name, size_t maxlen, char **out,
                      enum cap_err *code, char *msg, size_t msglen) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, name);
  if (v == NULL)
    return 0;
  if (!cJSON_IsString(v))
    return err(code, CAP_E_INVALID_FIELD, msg, msglen, "%s must be a string", name);
  size_t n = strlen(v->valuestring);
  if (maxlen && (n == 0 || n > maxlen)) {
    *code = CAP_E_INVALID_FIELD;
    snprintf(msg, msglen, "%s must be 1 to %zu bytes long", name, maxlen);
    return -EINVAL;
  }
  *out = xstrdup(v->valuestring);
  return 0;
}

static int check_key(const char *key, const char *name, enum cap_err *code, char *msg,
                     size_t msglen) {
  const char *why;
  if (cap_key_validate(key, strlen(key), &why) != 0) {
    *code = CAP_E_INVALID_KEY;
    snprintf(msg, msglen, "%s %s", name, why);
    return -EINVAL;
  }
  return 0;
}

/* Parses the body into *root, a JSON object with nothing after it, and
 * checks what cJSON would otherwise let through silently.  *root may be
 * set on failure too; the caller deletes it. */
static int parse_object(const char *body, size_t len, cJSON **root, enum cap_err *code, char *msg,
                        size_t msglen) {
  /* cJSON stops at a NUL, so a body with one inside is not the JSON it
   * seems to be. */
  if (len == 0 || memchr(body, '\0', len) != NULL || !cap_jsonw_utf8_valid(body, len))
    return err(code, CAP_E_INVALID_JSON, msg, msglen, "%s", "body must be a UTF-8 JSON object");
  if (!strings_clean(body, len))
    return err(code, CAP_E_INVALID_JSON, msg, msglen, "%s",
               "strings must not hold control characters or \\u0000");
  const char *end = NULL;
  *root = cJSON_ParseWithLengthOpts(body, len, &end, 0);
  if (!cJSON_IsObject(*root))
    return err(code, CAP_E_INVALID_JSON, msg, msglen, "%s", "body must be a JSON object");
  for (const char *p = end; p && p < body + len; p++)
    if (*p != ' ' && *p != '\t' && *p != '\r' && *p != '\n')
      return err(code, CAP_E_INVALID_JSON, msg, msglen, "%s",
                 "trailing bytes after the JSON object");
  return 0;
}

/* Refuses a field given twice or one this version does not know. */
static int check_fields(const cJSON *root, enum cap_err *code, char *msg, size_t msglen) {
  /* A key given twice means two things: cJSON would take the first, a
   * Worker's JSON.parse (or Python's json) the last, so a check made by
   * one would not hold for the other. */
  const cJSON *item;
  cJSON_ArrayForEach(item, root) {
    for (const cJSON *later = item->next; later; later = later->next)
      if (strcmp(item->string, later->string) == 0)
        return err(code, CAP_E_INVALID_JSON, msg, msglen, "duplicate field \"%.64s\"",
                   item->string);
  }
  cJSON_ArrayForEach(item, root) {
    size_t i, n = sizeof(known_fields) / sizeof(known_fields[0]);
    for (i = 0; i < n; i++)
      if (strcmp(item->string, known_fields[i]) == 0)
        break;
    if (i == n) {
      *code = CAP_E_UNKNOWN_FIELD;
      snprintf(msg, msglen, "unknown field \"%.64s\"", item->string);
      return -EINVAL;
    }
  }
  return 0;
}

/* A render names where its output goes: output_key for one object, or
 * output_prefix for a package of many (which preset takes which is checked
 * against the preset by the caller).  The prefix gets its trailing '/'. */
static int check_output(struct cap_execreq *r, enum cap_err *code, char *msg, size_t msglen) {
  if (r->preset == NULL)
    return err(code, CAP_E_MISSING_FIELD, msg, msglen, "%s is required", "preset");
  if (r->output_key && r->output_prefix)
    return err(code, CAP_E_INVALID_FIELD, msg, msglen, "%s",
               "give output_key (one object) or output_prefix (a package), not both");
  if (r->output_key == NULL && r->output_prefix == NULL)
    return err(code, CAP_E_MISSING_FIELD, msg, msglen, "%s is required",
               "output_key (or output_prefix for a multi-output preset)");
  if (r->output_key)
    return check_key(r->output_key, "output_key", code, msg, msglen);
  size_t n = strlen(r->output_prefix);
  if (n == 0)
    return err(code, CAP_E_INVALID_KEY, msg, msglen, "%s",
               "output_prefix must not be empty (a package goes under a prefix of its own)");
  if (r->output_prefix[n - 1] != '/') {
    r->output_prefix = xrealloc(r->output_prefix, n + 2);
    memcpy(r->output_prefix + n, "/", 2);
    n++;
  }
  /* The longest name a package puts under it is under 64 bytes. */
  if (n > CAP_OUTPUT_PREFIX_MAX)
    return err(code, CAP_E_INVALID_KEY, msg, msglen, "output_prefix must be at most %d bytes",
               CAP_OUTPUT_PREFIX_MAX);
  /* Checked as the key of an object under it: the same rules, one name more. */
  char probe[CAP_OUTPUT_PREFIX_MAX + 16];
  snprintf(probe, sizeof(probe), "%sx", r->output_prefix);
  return check_key(probe, "output_prefix", code, msg, msglen);
}

/* Sets the capability from cap (NULL: ffmpeg-render, the default when a
 * preset is given) and checks the keys and the preset it needs. */
static int check_capability(struct cap_execreq *r, const char *cap, enum cap_err *code, char *msg,
                            size_t msglen) {
  if (cap == NULL && r->preset == NULL)
    return err(code, CAP_E_MISSING_FIELD, msg, msglen, "%s is required", "capability");
  if (cap == NULL || strcmp(cap, "ffmpeg-render") == 0)
    r->capability = CAP_CAP_FFMPEG_RENDER;
  else if (strcmp(cap, "ffprobe") == 0)
    r->capability = CAP_CAP_FFPROBE;
  else
    return err(code, CAP_E_UNKNOWN_CAPABILITY, msg, msglen, "unknown capability \"%.64s\"", cap);

  if (r->input_key == NULL)
    return err(code, CAP_E_MISSING_FIELD, msg, msglen, "%s is required", "input_key");
  if (check_key(r->input_key, "input_key", code, msg, msglen))
    return -EINVAL;
  if (r->capability == CAP_CAP_FFMPEG_RENDER)
    return check_output(r, code, msg, msglen);
  if (r->output_key || r->output_prefix || r->preset)
    return err(code, CAP_E_INVALID_FIELD, msg, msglen, "%s is not used by ffprobe",
               r->output_key      ? "output_key"
               : r->output_prefix ? "output_prefix"
                                  : "preset");
  return 0;
}

/* Reads the optional "wait" and "async" fields. */
static int get_wait_async(struct cap_execreq *r, const cJSON *root, enum cap_err *code, char *msg,
                          size_t msglen) {
  const cJSON *w = cJSON_GetObjectItemCaseSensitive(root, "wait");
  if (w) {
    if (!cJSON_IsNumber(w) || w->valuedouble < 0 || w->valuedouble > WAIT_MAX_S ||
        w->valuedouble != floor(w->valuedouble)) {
      *code = CAP_E_INVALID_FIELD;
      snprintf(msg, msglen, "wait must be a whole number of seconds from 0 to %d", WAIT_MAX_S);
      return -EINVAL;
    }
    r->wait_s = (int)w->valuedouble;
  }
  const cJSON *a = cJSON_GetObjectItemCaseSensitive(root, "async");
  if (a) {
    if (!cJSON_IsBool(a))
      return err(code, CAP_E_INVALID_FIELD, msg, msglen, "%s must be true or false", "async");
    r->async = cJSON_IsTrue(a);
  }
  return 0;
}

/* Reads "callback_events" (only with a callback_url; default the three
 * terminal events) into r. */
static int get_events(struct cap_execreq *r, const cJSON *root, enum cap_err *code, char *msg,
                      size_t msglen) {
  const cJSON *ev = cJSON_GetObjectItemCaseSensitive(root, "callback_events");
  if (ev == NULL) {
    r->callback_events = r->callback_url ? CAP_CB_DEFAULT : 0;
    return 0;
  }
  if (r->callback_url == NULL)
    return err(code, CAP_E_INVALID_FIELD, msg, msglen, "%s",
               "callback_events needs a callback_url");
  if (!cJSON_IsArray(ev) || cJSON_GetArraySize(ev) == 0)
    return err(code, CAP_E_INVALID_FIELD, msg, msglen, "%s",
               "callback_events must be a non-empty array of started, progress, succeeded, "
               "failed, canceled");
  const cJSON *item;
  cJSON_ArrayForEach(item, ev) {
    unsigned bit = 0;
    for (int i = 0; cJSON_IsString(item) && cap_execreq_events[i]; i++)
      if (strcmp(item->valuestring, cap_execreq_events[i]) == 0)
        bit = 1u << i;
    if (bit == 0)
      return err(code, CAP_E_INVALID_FIELD, msg, msglen, "%s",
                 "callback_events may hold only started, progress, succeeded, failed, canceled");
    if (r->callback_events & bit)
      return err(code, CAP_E_INVALID_FIELD, msg, msglen, "callback_events lists \"%s\" twice",
                 item->valuestring);
    r->callback_events |= bit;
  }
  return 0;
}

void cap_execreq_events_format(unsigned mask, char *out, size_t outlen) {
  size_t used = 0;
  if (outlen == 0)
    return;
  out[0] = '\0';
  for (int i = 0; cap_execreq_events[i]; i++) {
    if (!(mask & (1u << i)))
      continue;
    int n = snprintf(out + used, outlen - used, "%s%s", used ? "," : "", cap_execreq_events[i]);
    if (n < 0 || (size_t)n >= outlen - used)
      return;
    used += (size_t)n;
  }
}

unsigned cap_execreq_events_parse(const char *list) {
  unsigned mask = 0;
  const char *s = list ? list : "";
  while (*s) {
    size_t n = strcspn(s, ",");
    for (int i = 0; cap_execreq_events[i]; i++)
      if (strlen(cap_execreq_events[i]) == n && strncmp(s, cap_execreq_events[i], n) == 0)
        mask |= 1u << i;
    s += n;
    if (*s == ',')
      s++;
  }
  return mask;
}

int cap_execreq_parse(struct cap_execreq *r, const char *body, size_t len, enum cap_err *code,
                      char *msg, size_t msglen) {
  cJSON *root = NULL;
  char *cap = NULL;
  int rc = -EINVAL;

  memset(r, 0, sizeof(*r));
  r->wait_s = -1;
  if (parse_object(body, len, &root, code, msg, msglen) || check_fields(root, code, msg, msglen))
    goto fail;
  if (get_string(root, "capability", 64, &cap, code, msg, msglen) ||
      get_string(root, "input_key", 0, &r->input_key, code, msg, msglen) ||
      get_string(root, "output_key", 0, &r->output_key, code, msg, msglen) ||
      get_string(root, "output_prefix", 0, &r->output_prefix, code, msg, msglen) ||
      get_string(root, "preset", CAP_PRESET_NAME_MAX, &r->preset, code, msg, msglen) ||
      get_string(root, "idempotency_key", CAP_IDEMPOTENCY_KEY_MAX, &r->idempotency_key, code, msg,
                 msglen) ||
      get_string(root, "callback_url", 0, &r->callback_url, code, msg, msglen))
    goto fail;
  if (check_capability(r, cap, code, msg, msglen) || get_wait_async(r, root, code, msg, msglen) ||
      get_events(r, root, code, msg, msglen))
    goto fail;
  rc = 0;
fail:
  free(cap);
  cJSON_Delete(root);
  return rc;
}

void cap_execreq_free(struct cap_execreq *r) {
  free(r->input_key);
  free(r->output_key);
  free(r->output_prefix);
  free(r->preset);
  free(r->idempotency_key);
  free(r->callback_url);
  memset(r, 0, sizeof(*r));
}
