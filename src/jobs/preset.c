#include "preset.h"

#include "alloc.h"
#include "buf.h"
#include "ladderspec.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* The longest "content_type" and "cache_control" a preset may give. */
#define CONTENT_TYPE_MAX  127
#define CACHE_CONTROL_MAX 256

/* The media types outputs are stored under when their preset names none,
 * by extension: the one table of them, so that a public bucket serves each
 * output with the type a browser or player expects. */
static const struct {
  const char *ext;
  const char *type;
} ext_types[] = {
    {"mp4", "video/mp4"},
    {"m4a", "audio/mp4"},
    {"jpg", "image/jpeg"},
    {"jpeg", "image/jpeg"},
    {"png", "image/png"},
    {"ts", "video/mp2t"},
    {"m3u8", "application/vnd.apple.mpegurl"},
    {"mpd", "application/dash+xml"},
    {"m4s", "video/iso.segment"},
    {"mkv", "video/x-matroska"},
    {"webm", "video/webm"},
    {"mp3", "audio/mpeg"},
};

const char *cap_preset_content_type(const char *ext) {
  for (size_t i = 0; ext && i < sizeof(ext_types) / sizeof(ext_types[0]); i++)
    if (strcasecmp(ext, ext_types[i].ext) == 0)
      return ext_types[i].type;
  return "application/octet-stream";
}

/* A character of an RFC 6838 type or subtype name. */
static int media_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         (c != '\0' && strchr("!#$&^_.+-", c) != NULL);
}

/* Returns 1 for "type/subtype", both non-empty, without parameters: what
 * is sent as Content-Type and signed, so it must be a plain token pair. */
static int valid_media_type(const char *s) {
  size_t n = strlen(s), slash = strcspn(s, "/");
  if (n == 0 || n > CONTENT_TYPE_MAX || slash == 0 || slash + 1 >= n)
    return 0;
  for (size_t i = 0; i < n; i++)
    if (i != slash && !media_char(s[i]))
      return 0;
  return 1;
}

/* Returns 1 for a Cache-Control value that a header line can carry and that
 * is signed as sent: printable ASCII, no blank at either end (SigV4 trims
 * those, so the signed value would differ from the one sent). */
static int valid_cache_control(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n > CACHE_CONTROL_MAX || s[0] == ' ' || s[n - 1] == ' ')
    return 0;
  for (size_t i = 0; i < n; i++)
    if (s[i] < 0x20 || s[i] > 0x7e)
      return 0;
  return 1;
}

static int valid_name(const char *s, size_t max) {
  size_t n = strlen(s);
  if (n == 0 || n > max)
    return 0;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
          c == '_' || c == '.'))
      return 0;
  }
  return 1;
}

static const char *get_str(const cJSON *o, const char *key) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
  return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* Reads an optional integer override into *out (-1 when absent). */
static int get_override(const cJSON *o, const char *key, int max, int *out) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
  *out = -1;
  if (v == NULL)
    return 0;
  if (!cJSON_IsNumber(v) || v->valuedouble != (double)(int)v->valuedouble || v->valuedouble < 0 ||
      v->valuedouble > max)
    return -EINVAL;
  *out = (int)v->valuedouble;
  return 0;
}

/* input_formats: a string "a,b" or an array of names, each a demuxer name
 * of [a-z0-9_].  Returns a comma-separated copy in *out, or -EINVAL. */
static int get_formats(const cJSON *o, char **out) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "input_formats");
  struct cap_buf b;
  *out = NULL;
  if (v == NULL)
    return 0;
  cap_buf_init(&b);
  if (cJSON_IsString(v)) {
    cap_buf_puts(&b, v->valuestring);
  } else if (cJSON_IsArray(v)) {
    const cJSON *it;
    cJSON_ArrayForEach(it, v) {
      if (!cJSON_IsString(it) || strchr(it->valuestring, ',')) {
        cap_buf_free(&b);
        return -EINVAL;
      }
      if (b.len)
        cap_buf_putc(&b, ',');
      cap_buf_puts(&b, it->valuestring);
    }
  }
  int ok = b.len > 0 && b.len < 4096;
  for (size_t i = 0; ok && i < b.len; i++) {
    char c = b.data[i];
    ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == ',';
  }
  if (!ok) {
    cap_buf_free(&b);
    return -EINVAL;
  }
  *out = cap_buf_steal(&b);
  return 0;
}

/* Reads the optional "content_type" and "cache_control" into p, the type
 * defaulting from p->ext.  Returns 0 or -EINVAL. */
static int get_store_headers(const cJSON *o, struct cap_preset *p) {
  const cJSON *ct = cJSON_GetObjectItemCaseSensitive(o, "content_type");
  const cJSON *cc = cJSON_GetObjectItemCaseSensitive(o, "cache_control");
  if ((ct && (!cJSON_IsString(ct) || !valid_media_type(ct->valuestring))) ||
      (cc && (!cJSON_IsString(cc) || !valid_cache_control(cc->valuestring))))
    return -EINVAL;
  p->content_type = xstrdup(ct ? ct->valuestring : cap_preset_content_type(p->ext));
  p->cache_control = cc ? xstrdup(cc->valuestring) : NULL;
  return 0;
}

/* Copies a JSON array of strings into a NULL-terminated vector. */
static int str_array(const cJSON *arr, char ***out, size_t *n) {
  const cJSON *it;
  size_t i = 0, count = (size_t)cJSON_GetArraySize(arr);
  *out = xcalloc(count + 1, sizeof(char *));
  *n = 0;
  cJSON_ArrayForEach(it, arr) {
    if (!cJSON_IsString(it) || strlen(it->valuestring) > 4096)
      return -EINVAL;
    (*out)[i++] = xstrdup(it->valuestring);
    *n = i;
  }
  return 0;
}

static void preset_free(struct cap_preset *p) {
  free(p->name);
  free(p->description);
  free(p->cls);
  free(p->format);
  free(p->ext);
  free(p->input_formats);
  free(p->content_type);
  free(p->cache_control);
  free(p->hw_encoder);
  free(p->unavailable_reason);
  cap_ladderspec_free(p->ladder);
  for (size_t i = 0; p->args && i < p->nargs; i++)
    free(p->args[i]);
  free(p->args);
  for (size_t i = 0; p->encoders && i < p->nencoders; i++)
    free(p->encoders[i]);
  free(p->encoders);
}

void cap_preset_set_free(struct cap_presets *set) {
  if (set == NULL)
    return;
  for (size_t i = 0; i < set->n; i++)
    preset_free(&set->v[i]);
  free(set->v);
  free(set);
}

/* A ladder preset ("package"): the muxer and playlist extension are the
 * package's, its arguments come from its rungs.  Returns 0 or -EINVAL. */
static int parse_ladder(const char *name, const cJSON *o, struct cap_preset *p, char *err,
                        size_t errlen) {
  char why[300];
  if (cJSON_GetObjectItemCaseSensitive(o, "args") ||
      cJSON_GetObjectItemCaseSensitive(o, "format") || cJSON_GetObjectItemCaseSensitive(o, "ext")) {
    snprintf(err, errlen, "preset %s: a ladder (package) takes rungs, not args, format or ext",
             name);
    return -EINVAL;
  }
  if (cap_ladderspec_parse(o, &p->ladder, why, sizeof(why)) != 0) {
    snprintf(err, errlen, "preset %s: %s", name, why);
    return -EINVAL;
  }
  return 0;
}

/* Fills in what a ladder preset leaves out, so that the rest of the parse
 * treats it like any other. */
static cJSON *ladder_defaults(const cJSON *o) {
  cJSON *c = cJSON_Duplicate(o, 1);
  if (c == NULL)
    abort(); /* cJSON fails only when out of memory. */
  cJSON_AddStringToObject(c, "format", "hls");
  cJSON_AddStringToObject(c, "ext", "m3u8");
  cJSON_AddItemToObject(c, "args", cJSON_CreateArray());
  return c;
}

static int parse_single(const char *name, const cJSON *o, struct cap_preset *p, char *err,
                        size_t errlen);

static int parse_one(const char *name, const cJSON *o, struct cap_preset *p, char *err,
                     size_t errlen) {
  if (!cJSON_IsObject(o) || cJSON_GetObjectItemCaseSensitive(o, "package") == NULL)
    return parse_single(name, o, p, err, errlen);
  struct cap_ladderspec *ladder = NULL;
  memset(p, 0, sizeof(*p));
  if (parse_ladder(name, o, p, err, errlen) != 0) {
    p->name = xstrdup(name);
    return -EINVAL;
  }
  ladder = p->ladder;
  cJSON *full = ladder_defaults(o);
  int rc = parse_single(name, full, p, err, errlen);
  cJSON_Delete(full);
  p->ladder = ladder;
  return rc;
}

static int parse_single(const char *name, const cJSON *o, struct cap_preset *p, char *err,
                        size_t errlen) {
  const char *cls = get_str(o, "class"), *fmt = get_str(o, "format"), *ext = get_str(o, "ext");
  const char *desc = get_str(o, "description"), *hw = get_str(o, "hw_encoder");
  const cJSON *args = cJSON_GetObjectItemCaseSensitive(o, "args");
  const cJSON *enc = cJSON_GetObjectItemCaseSensitive(o, "encoders");
  const cJSON *stream = cJSON_GetObjectItemCaseSensitive(o, "streamable");
  const cJSON *timeout = cJSON_GetObjectItemCaseSensitive(o, "timeout_s");

  memset(p, 0, sizeof(*p));
  p->name = xstrdup(name);
  if (!valid_name(name, 64)) {
    snprintf(err, errlen, "preset name \"%.64s\" must be 1-64 of [A-Za-z0-9._-]", name);
    return -EINVAL;
  }
  if (!cJSON_IsObject(o) || cls == NULL || !valid_name(cls, 31) || fmt == NULL ||
      !valid_name(fmt, 31) || ext == NULL || !valid_name(ext, 15) || !cJSON_IsArray(args) ||
      (stream && !cJSON_IsBool(stream)) || (enc && !cJSON_IsArray(enc)) ||
      (hw && !valid_name(hw, 63))) {
    snprintf(err, errlen,
             "preset %s: needs class, format and ext (names), args (array of strings), "
             "optional streamable (bool), encoders (array), hw_encoder, timeout_s",
             name);
    return -EINVAL;
  }
  p->cls = xstrdup(cls);
  p->format = xstrdup(fmt);
  p->ext = xstrdup(ext);
  p->description = xstrdup(desc ? desc : "");
  p->hw_encoder = hw ? xstrdup(hw) : NULL;
  p->streamable = stream ? cJSON_IsTrue(stream) : 0;
  p->timeout_s = 21600;
  if (timeout) {
    if (!cJSON_IsNumber(timeout) || timeout->valuedouble < 1 || timeout->valuedouble > 604800) {
      snprintf(err, errlen, "preset %s: timeout_s must be 1 to 604800", name);
      return -EINVAL;
    }
    p->timeout_s = (int)timeout->valuedouble;
  }
  if (str_array(args, &p->args, &p->nargs) != 0 ||
      (enc && str_array(enc, &p->encoders, &p->nencoders) != 0)) {
    snprintf(err, errlen, "preset %s: args and encoders must be arrays of strings", name);
    return -EINVAL;
  }
  if (p->encoders == NULL)
    p->encoders = xcalloc(1, sizeof(char *));
  if (get_override(o, "threads", 1024, &p->threads) != 0 ||
      get_override(o, "nice", 19, &p->nice) != 0 ||
      get_override(o, "memory_mb", 16777216, &p->memory_mb) != 0) {
    snprintf(err, errlen, "preset %s: threads (0-1024), nice (0-19), memory_mb must be integers",
             name);
    return -EINVAL;
  }
  if (get_formats(o, &p->input_formats) != 0) {
    snprintf(
        err, errlen,
        "preset %s: input_formats must be demuxer names ([a-z0-9_]), as \"a,b\" or [\"a\",\"b\"]",
        name);
    return -EINVAL;
  }
  const cJSON *mode = cJSON_GetObjectItemCaseSensitive(o, "input_mode");
  const char *ms = cJSON_GetStringValue(mode);
  p->input_stream = -1;
  if (mode && (ms == NULL || (strcmp(ms, "stream") != 0 && strcmp(ms, "download") != 0))) {
    snprintf(err, errlen, "preset %s: input_mode must be \"stream\" or \"download\"", name);
    return -EINVAL;
  }
  if (ms)
    p->input_stream = strcmp(ms, "stream") == 0;
  if (get_store_headers(o, p) != 0) {
    snprintf(err, errlen,
             "preset %s: content_type must be a media type \"type/subtype\" of "
             "[A-Za-z0-9!#$&^_.+-] (at most %d bytes, no parameters); cache_control printable "
             "ASCII (1-%d bytes, no blank at either end)",
             name, CONTENT_TYPE_MAX, CACHE_CONTROL_MAX);
    return -EINVAL;
  }
  /* The server chooses the input and the output; a preset naming its own
   * would bypass the object store's checks. */
  for (size_t i = 0; i < p->nargs; i++)
    if (strcmp(p->args[i], "-i") == 0 || strcmp(p->args[i], "-f") == 0 ||
        strcmp(p->args[i], "-y") == 0 || strncmp(p->args[i], "-progress", 9) == 0 ||
        strstr(p->args[i], "_whitelist") || strstr(p->args[i], "_blacklist")) {
      snprintf(err, errlen, "preset %s: args must not contain %s (the server sets it)", name,
               p->args[i]);
      return -EINVAL;
    }
  p->available = 1;
  return 0;
}

int cap_preset_parse(const char *json, size_t len, struct cap_presets **out, char *err,
                     size_t errlen) {
  cJSON *root = cJSON_ParseWithLength(json, len);
  struct cap_presets *set = xcalloc(1, sizeof(*set));
  const cJSON *it;
  int rc = -EINVAL;

  if (!cJSON_IsObject(root) || cJSON_GetArraySize(root) == 0) {
    snprintf(err, errlen, "presets must be a non-empty JSON object of name: preset");
    goto fail;
  }
  set->v = xcalloc((size_t)cJSON_GetArraySize(root), sizeof(*set->v));
  cJSON_ArrayForEach(it, root) {
    if (cap_preset_find(set, it->string)) {
      snprintf(err, errlen, "preset %.64s is defined twice", it->string);
      goto fail;
    }
    int bad = parse_one(it->string, it, &set->v[set->n], err, errlen);
    set->n++;
    if (bad)
      goto fail;
  }
  *out = set;
  set = NULL;
  rc = 0;
fail:
  cJSON_Delete(root);
  cap_preset_set_free(set);
  return rc;
}

int cap_preset_load(const char *path, struct cap_presets **out, char *err, size_t errlen) {
  if (path == NULL)
    return cap_preset_parse(cap_preset_builtin_json, strlen(cap_preset_builtin_json), out, err,
                            errlen);
  FILE *f = fopen(path, "rb");
  if (f == NULL) {
    snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
    return -errno;
  }
  struct cap_buf b;
  char chunk[4096];
  size_t n;
  cap_buf_init(&b);
  while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0 && b.len < 4 * 1024 * 1024)
    cap_buf_append(&b, chunk, n);
  fclose(f);
  char why[400];
  int rc = cap_preset_parse(b.data ? b.data : "", b.len, out, why, sizeof(why));
  if (rc != 0)
    snprintf(err, errlen, "%s: %s", path, why);
  cap_buf_free(&b);
  return rc;
}

const struct cap_preset *cap_preset_find(const struct cap_presets *set, const char *name) {
  for (size_t i = 0; set && i < set->n; i++)
    if (strcmp(set->v[i].name, name) == 0)
      return &set->v[i];
  return NULL;
}

void cap_preset_mark_unavailable(struct cap_preset *p, const char *reason) {
  p->available = 0;
  free(p->unavailable_reason);
  p->unavailable_reason = xstrdup(reason);
}
