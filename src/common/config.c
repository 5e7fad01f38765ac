#include "config.h"

#include "alloc.h"
#include "buf.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum opt_type { OPT_STR, OPT_INT, OPT_BOOL, OPT_LEVEL, OPT_JSON };

struct opt {
  const char *key; /* JSON key; the flag and env names derive from it. */
  enum opt_type type;
  size_t off;
  long min, max;
  const char *def;
  const char *env; /* Overrides the derived CAP_<KEY> name when set. */
  const char *help;
};

#define O(f) offsetof(struct cap_config, f)

static const struct opt opts[] = {
    {"host", OPT_STR, O(host), 0, 0, "127.0.0.1", NULL, "address to listen on"},
    {"port", OPT_INT, O(port), 0, 65535, "3001", NULL, "TCP port (0 picks a free one)"},
    {"token", OPT_STR, O(token), 0, 0, NULL, "CAPABILITY_TOKEN",
     "bearer token (visible in ps: prefer --token-file or CAPABILITY_TOKEN)"},
    {"token_file", OPT_STR, O(token_file), 0, 0, NULL, NULL,
     "file of tokens, one per line, optional name: prefix"},
    {"config", OPT_STR, O(config_path), 0, 0, NULL, NULL, "JSON config file"},
    {"log_level", OPT_LEVEL, O(log_level), 0, 0, "info", NULL, "debug, info, warn or error"},
    {"log_file", OPT_STR, O(log_file), 0, 0, NULL, NULL,
     "append logs here instead of stdout (reopened on SIGUSR1)"},
    {"rate_limit", OPT_INT, O(rate_limit), 1, 1000000000, "30", NULL,
     "/exec requests per minute per client address"},
    {"rate_limit_token", OPT_INT, O(rate_limit_token), 1, 1000000000, "120", NULL,
     "/exec requests per minute per token"},
    {"rate_limit_clients", OPT_INT, O(rate_limit_clients), 1, 10000000, "10000", NULL,
     "most client buckets kept (least recently used are evicted)"},
    {"trusted_proxies", OPT_STR, O(trusted_proxies), 0, 0, "127.0.0.0/8,::1", NULL,
     "peers whose X-Forwarded-For is believed (IPs/CIDRs, comma-separated)"},
    {"max_connections", OPT_INT, O(max_connections), 1, 1000000, "1024", NULL,
     "open connections at most (idle ones are closed first when few are left)"},
    {"max_connections_per_client", OPT_INT, O(max_connections_per_client), 0, 1000000, "256", NULL,
     "open connections per client address (behind a trusted proxy: the forwarded one); 0: off"},
    {"max_header_bytes", OPT_INT, O(max_header_bytes), 256, 1048576, "8192", NULL,
     "request line and headers, bytes"},
    {"max_headers", OPT_INT, O(max_headers), 1, 1000, "64", NULL, "header fields per request"},
    {"max_url_bytes", OPT_INT, O(max_url_bytes), 16, 1048576, "2048", NULL,
     "request target length"},
    {"max_body_bytes", OPT_INT, O(max_body_bytes), 64, 67108864, "65536", NULL,
     "POST /exec body size"},
    {"header_timeout_ms", OPT_INT, O(header_timeout_ms), 100, 3600000, "10000", NULL,
     "time to receive request headers"},
    {"body_timeout_ms", OPT_INT, O(body_timeout_ms), 100, 3600000, "30000", NULL,
     "time to receive a request body"},
    {"idle_timeout_ms", OPT_INT, O(idle_timeout_ms), 100, 3600000, "60000", NULL,
     "keep-alive idle time between requests"},
    {"min_body_rate", OPT_INT, O(min_body_rate), 0, 1073741824, "1024", NULL,
     "bytes a second a request body must average over each 5 s; 0: no minimum"},
    {"shutdown_grace_ms", OPT_INT, O(shutdown_grace_ms), 0, 3600000, "120000", NULL,
     "on SIGTERM, time running jobs get to finish before they are canceled"},
    {"drain_linger_ms", OPT_INT, O(drain_linger_ms), 0, 600000, "10000", NULL,
     "when draining jobs are done, time their results stay pollable if not fetched yet"},
    {"metrics_listen", OPT_STR, O(metrics_listen), 0, 0, NULL, NULL,
     "HOST:PORT of a second listener for /metrics and /health, kept off the public port"},
    {"metrics_auth", OPT_STR, O(metrics_auth), 0, 0, "token", NULL,
     "token: /metrics needs a capability token; none: it does not (except via Funnel)"},
    {"registry_url", OPT_STR, O(registry_url), 0, 0, NULL, "REGISTRY_URL",
     "capability registry to register with and send heartbeats to"},
    {"registry_token_file", OPT_STR, O(registry_token_file), 0, 0, NULL, NULL,
     "file holding the registry's bearer token (else env REGISTRY_TOKEN)"},
    {"public_host", OPT_STR, O(public_host), 0, 0, NULL, NULL,
     "host name Workers reach this server at (the MagicDNS name), for the registry"},
    {"public_port", OPT_INT, O(public_port), 1, 65535, "443", NULL,
     "HTTPS port Workers reach this server at (443 through Funnel)"},
    {"heartbeat_s", OPT_INT, O(heartbeat_s), 1, 3600, "10", NULL,
     "seconds between heartbeats to the registry"},
    {"data_dir", OPT_STR, O(data_dir), 0, 0, "./data", NULL, "local object store directory"},
    {"insecure_no_auth", OPT_BOOL, O(insecure_no_auth), 0, 1, "0", NULL,
     "development only: serve /exec without any token"},
    {"presets", OPT_STR, O(presets), 0, 0, NULL, NULL,
     "presets JSON file replacing the built-in set (reloaded on SIGHUP)"},
    {"pool_cpu", OPT_INT, O(pool_cpu), 0, 256, "0", NULL,
     "concurrent cpu-class jobs (0: half the cores, rounded up)"},
    {"pool_nvenc", OPT_INT, O(pool_nvenc), 0, 64, "3", NULL, "concurrent nvenc-class jobs"},
    {"queue_max", OPT_INT, O(queue_max), 0, 100000, "32", NULL, "queued jobs per class at most"},
    {"job_timeout_s", OPT_INT, O(job_timeout_s), 1, 604800, "21600", NULL,
     "longest any job may run"},
    {"job_ttl_s", OPT_INT, O(job_ttl_s), 1, 604800, "3600", NULL,
     "how long finished jobs stay pollable"},
    {"jobs_max", OPT_INT, O(jobs_max), 16, 1000000, "10000", NULL, "jobs kept at most"},
    {"wait_default_s", OPT_INT, O(wait_default_s), 0, 95, "60", NULL,
     "how long POST /exec waits for a result by default"},
    {"wait_max_s", OPT_INT, O(wait_max_s), 0, 95, "90", NULL,
     "longest wait a client may ask for (Cloudflare cuts at about 100 s)"},
    {"cancel_grace_ms", OPT_INT, O(cancel_grace_ms), 0, 600000, "5000", NULL,
     "ignored, kept so that old configurations load: canceled and timed-out jobs are killed "
     "at once"},
    {"cancel_on_disconnect", OPT_BOOL, O(cancel_on_disconnect), 0, 1, "0", NULL,
     "cancel a job when the client waiting for it goes away"},
    {"ffmpeg", OPT_STR, O(ffmpeg), 0, 0, "ffmpeg", NULL, "ffmpeg binary"},
    {"ffprobe", OPT_STR, O(ffprobe), 0, 0, "ffprobe", NULL, "ffprobe binary"},
    {"storage", OPT_STR, O(storage), 0, 0, NULL, NULL,
     "file:///DIR, s3://BUCKET[/PREFIX] (AWS_* env) or r2://BUCKET[/PREFIX] (R2_ACCOUNT_ID)"},
    {"s3_virtual_host", OPT_BOOL, O(s3_virtual_host), 0, 1, "0", NULL,
     "address the bucket as BUCKET.host instead of host/BUCKET"},
    {"part_size", OPT_INT, O(part_size), 5242880, 1073741824, "8388608", NULL,
     "multipart part size in bytes (every part but the last has exactly this size)"},
    {"parts_in_flight", OPT_INT, O(parts_in_flight), 1, 64, "4", NULL,
     "parts uploaded at once per output"},
    {"upload_budget_mb", OPT_INT, O(upload_budget_mb), 8, 65536, "128", NULL,
     "memory for part buffers over all uploads, MiB"},
    {"storage_retries", OPT_INT, O(storage_retries), 0, 20, "5", NULL,
     "retries of a storage request (5xx, 429, network, stalls)"},
    {"storage_backoff_ms", OPT_INT, O(storage_backoff_ms), 10, 60000, "200", NULL,
     "first retry delay; doubles with jitter"},
    {"storage_low_speed_s", OPT_INT, O(storage_low_speed_s), 1, 3600, "30", NULL,
     "a transfer under 1 KiB/s for this long is retried"},
    {"input_max_mb", OPT_INT, O(input_max_mb), 1, 10000000, "51200", NULL,
     "largest input downloaded, MiB"},
    {"input_mode", OPT_STR, O(input_mode), 0, 0, "stream", NULL,
     "how S3/R2 inputs are read: stream (by range, while ffmpeg decodes) or download "
     "(whole, into a temp file, first); presets may say otherwise"},
    {"orphan_age_s", OPT_INT, O(orphan_age_s), 60, 2592000, "86400", NULL,
     "multipart uploads older than this are aborted by the sweep (one whose abort was "
     "refused is left alone this long)"},
    {"orphan_sweep_s", OPT_INT, O(orphan_sweep_s), 0, 604800, "3600", NULL,
     "how often the orphan sweep runs (0: only at start-up)"},
    {"storage_credentials_file", OPT_STR, O(storage_credentials_file), 0, 0, NULL, NULL,
     "file of AWS_ACCESS_KEY_ID=... / AWS_SECRET_ACCESS_KEY=... lines (mode 0600)"},
    {"sandbox", OPT_STR, O(sandbox), 0, 0, "best-effort", NULL,
     "children's sandbox: required (refuse to start without Landlock), best-effort or off"},
    {"sandbox_abi", OPT_INT, O(sandbox_abi), 0, 64, "0", NULL,
     "apply at most this Landlock ABI version (0: all the kernel offers; for tests)"},
    {"sandbox_read_paths", OPT_STR, O(sandbox_read_paths), 0, 0, NULL, NULL,
     "extra paths children may read, comma-separated (an ffmpeg outside /usr)"},
    {"input_formats", OPT_STR, O(input_formats), 0, 0, CAP_DEFAULT_INPUT_FORMATS, NULL,
     "demuxers an input may be read with, comma-separated (presets may narrow or widen)"},
    {"class_limits", OPT_JSON, O(class_limits), 0, 0, CAP_DEFAULT_CLASS_LIMITS, NULL,
     "JSON: {\"class\":{\"nice\":0-19,\"ionice\":\"idle\"|\"best-effort:0-7\"|\"none\","
     "\"memory_mb\":N,\"address_space_mb\":N,\"threads\":N}}"},
    {"output_max_mb", OPT_INT, O(output_max_mb), 1, 100000000, "262144", NULL,
     "largest file a child may write, MiB (RLIMIT_FSIZE)"},
    {"ladder_uploads", OPT_INT, O(ladder_uploads), 1, 32, "4", NULL,
     "objects a ladder job uploads at once"},
    {"ladder_backlog_segments", OPT_INT, O(ladder_backlog_segments), 2, 100000, "24", NULL,
     "finished files a ladder job may hold on local disk before ffmpeg is paused"},
    {"ladder_backlog_mb", OPT_INT, O(ladder_backlog_mb), 1, 1000000, "512", NULL,
     "MiB of finished files a ladder job may hold on local disk before ffmpeg is paused"},
    {"journal", OPT_STR, O(journal), 0, 0, "on", NULL,
     "on: jobs, results and pending webhooks survive a restart (SQLite in the data directory); "
     "off: memory only"},
    {"journal_path", OPT_STR, O(journal_path), 0, 0, NULL, NULL,
     "the journal's file (default: DATA_DIR/.cap-state/journal.db)"},
    {"journal_reset", OPT_BOOL, O(journal_reset), 0, 1, "0", NULL,
     "move an unreadable journal aside (to PATH.broken-TIME) and start with an empty one"},
    {"webhook_secrets_file", OPT_STR, O(webhook_secrets_file), 0, 0, NULL, NULL,
     "file of \"token-name:whsec_... [whsec_...]\" lines: the secrets webhooks are signed with"},
    {"callback_hosts", OPT_STR, O(callback_hosts), 0, 0, NULL, NULL,
     "hosts a callback_url may name, comma-separated (\"*.workers.dev\" matches subdomains); "
     "unset: callbacks refused"},
    {"callback_allow_cidrs", OPT_STR, O(callback_allow_cidrs), 0, 0, NULL, NULL,
     "private, loopback, link-local or CGNAT networks callbacks may reach anyway (CIDRs)"},
    {"callback_ca_file", OPT_STR, O(callback_ca_file), 0, 0, NULL, NULL,
     "CA certificates webhook receivers are verified with (default: the system's)"},
    {"callback_retry_s", OPT_INT, O(callback_retry_s), 1, 604800, "86400", NULL,
     "how long a webhook is retried before it is dropped"},
    {"callback_backoff_ms", OPT_INT, O(callback_backoff_ms), 10, 3600000, "1000", NULL,
     "first webhook retry delay; doubles with jitter, at most an hour"},
    {"callback_timeout_ms", OPT_INT, O(callback_timeout_ms), 100, 600000, "10000", NULL,
     "time one webhook attempt may take"},
    {"callback_concurrency", OPT_INT, O(callback_concurrency), 1, 256, "8", NULL,
     "webhook deliveries in flight at once"},
    {"callback_progress_ms", OPT_INT, O(callback_progress_ms), 100, 3600000, "5000", NULL,
     "at most one progress webhook per job this often"},
    {"token_prefixes", OPT_JSON, O(token_prefixes), 0, 0, NULL, NULL,
     "JSON: {\"token name\":{\"input\":[prefixes],\"output\":[prefixes]}}"},
};

#define NOPTS (sizeof(opts) / sizeof(opts[0]))

static void flag_name(const struct opt *o, char *out, size_t n) {
  snprintf(out, n, "--%s", o->key);
  for (char *p = out + 2; *p; p++)
    if (*p == '_')
      *p = '-';
}

static void env_name(const struct opt *o, char *out, size_t n) {
  if (o->env) {
    snprintf(out, n, "%s", o->env);
    return;
  }
  snprintf(out, n, "CAP_%s", o->key);
  for (char *p = out; *p; p++)
    *p = (char)toupper((unsigned char)*p);
}

/* Sets one option from text; src says where it came from for the error. */
static int set_opt(struct cap_config *cfg, const struct opt *o, const char *val, char *err,
                   size_t errlen) {
  char *base = (char *)cfg;
  switch (o->type) {
  case OPT_STR: {
    char **slot = (char **)(base + o->off);
    if (val[0] == '\0') {
      snprintf(err, errlen, "%s: must not be empty", o->key);
      return -EINVAL;
    }
    free(*slot);
    *slot = xstrdup(val);
    return 0;
  }
  case OPT_INT: {
    char *end;
    errno = 0;
    long v = strtol(val, &end, 10);
    if (errno != 0 || end == val || *end != '\0' || v < o->min || v > o->max) {
      snprintf(err, errlen, "%s: must be an integer from %ld to %ld (got \"%.64s\")", o->key,
               o->min, o->max, val);
      return -EINVAL;
    }
    *(int *)(base + o->off) = (int)v;
    return 0;
  }
  case OPT_BOOL: {
    int v;
    if (!strcmp(val, "1") || !strcmp(val, "true") || !strcmp(val, "yes"))
      v = 1;
    else if (!strcmp(val, "0") || !strcmp(val, "false") || !strcmp(val, "no"))
      v = 0;
    else {
      snprintf(err, errlen, "%s: must be true or false (got \"%.64s\")", o->key, val);
      return -EINVAL;
    }
    *(int *)(base + o->off) = v;
    return 0;
  }
  case OPT_JSON: {
    cJSON *j = cJSON_Parse(val);
    int ok = cJSON_IsObject(j);
    cJSON_Delete(j);
    if (!ok) {
      snprintf(err, errlen, "%s: must be a JSON object", o->key);
      return -EINVAL;
    }
    char **slot = (char **)(base + o->off);
    free(*slot);
    *slot = xstrdup(val);
    return 0;
  }
  case OPT_LEVEL:
    if (cap_log_parse_level(val, (enum cap_log_level *)(base + o->off)) != 0) {
      snprintf(err, errlen, "%s: must be debug, info, warn or error (got \"%.64s\")", o->key, val);
      return -EINVAL;
    }
    return 0;
  }
  return -EINVAL;
}

static const struct opt *find_flag(const char *arg) {
  char name[64];
  for (size_t i = 0; i < NOPTS; i++) {
    flag_name(&opts[i], name, sizeof(name));
    if (strcmp(arg, name) == 0)
      return &opts[i];
  }
  return NULL;
}

static const struct opt *find_key(const char *key) {
  for (size_t i = 0; i < NOPTS; i++)
    if (strcmp(opts[i].key, key) == 0)
      return &opts[i];
  return NULL;
}

/* Converts one JSON value of the config file to option text. */
static int json_value_text(const struct opt *o, const cJSON *v, struct cap_buf *out, char *err,
                           size_t errlen) {
  if (o->type == OPT_INT && cJSON_IsNumber(v)) {
    double d = v->valuedouble;
    if (d != (double)(long)d) {
      snprintf(err, errlen, "%s: must be an integer", o->key);
      return -EINVAL;
    }
    cap_buf_printf(out, "%ld", (long)d);
  } else if (o->type == OPT_BOOL && cJSON_IsBool(v)) {
    cap_buf_puts(out, cJSON_IsTrue(v) ? "1" : "0");
  } else if ((o->type == OPT_STR || o->type == OPT_LEVEL) && cJSON_IsString(v)) {
    cap_buf_puts(out, v->valuestring);
  } else if (o->type == OPT_JSON && cJSON_IsObject(v)) {
    char *text = cJSON_PrintUnformatted(v);
    cap_buf_puts(out, text ? text : "{}");
    cJSON_free(text);
  } else if ((strcmp(o->key, "trusted_proxies") == 0 || strcmp(o->key, "input_formats") == 0 ||
              strcmp(o->key, "sandbox_read_paths") == 0) &&
             cJSON_IsArray(v)) {
    const cJSON *it;
    cJSON_ArrayForEach(it, v) {
      if (!cJSON_IsString(it)) {
        snprintf(err, errlen, "%s: array items must be strings", o->key);
        return -EINVAL;
      }
      if (out->len)
        cap_buf_putc(out, ',');
      cap_buf_puts(out, it->valuestring);
    }
  } else {
    static const char *const want[] = {"a string", "an integer", "true or false", "a string",
                                       "a JSON object"};
    snprintf(err, errlen, "%s: must be %s", o->key, want[o->type]);
    return -EINVAL;
  }
  return 0;
}

static int load_file(struct cap_config *cfg, const char *path, char *err, size_t errlen) {
  FILE *f = fopen(path, "rb");
  struct cap_buf text, val;
  cJSON *root = NULL;
  int rc = -EINVAL;

  cap_buf_init(&text);
  cap_buf_init(&val);
  if (f == NULL) {
    snprintf(err, errlen, "config: cannot open %s: %s", path, strerror(errno));
    goto fail;
  }
  char chunk[4096];
  size_t n;
  while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
    cap_buf_append(&text, chunk, n);
    if (text.len > 1024 * 1024) {
      snprintf(err, errlen, "config: %s is larger than 1 MiB", path);
      goto fail;
    }
  }
  const char *end = NULL;
  root = cJSON_ParseWithLengthOpts(text.data ? text.data : "", text.len, &end, 0);
  while (root && end && end < text.data + text.len &&
         (*end == ' ' || *end == '\n' || *end == '\r' || *end == '\t'))
    end++;
  if (!cJSON_IsObject(root) || end != text.data + text.len) {
    snprintf(err, errlen, "config: %s is not a JSON object", path);
    goto fail;
  }
  const cJSON *item;
  cJSON_ArrayForEach(item, root) {
    const struct opt *o = find_key(item->string);
    if (o == NULL || strcmp(o->key, "config") == 0) {
      snprintf(err, errlen, "config: unknown key \"%.64s\" in %s", item->string, path);
      goto fail;
    }
    cap_buf_reset(&val);
    if (json_value_text(o, item, &val, err, errlen) != 0)
      goto fail;
    if (set_opt(cfg, o, val.data ? val.data : "", err, errlen) != 0)
      goto fail;
  }
  rc = 0;
fail:
  if (f)
    fclose(f);
  cJSON_Delete(root);
  cap_buf_free(&text);
  cap_buf_free(&val);
  return rc;
}

static const char *env_get(char **envp, const char *name) {
  size_t n = strlen(name);
  for (char **e = envp; e && *e; e++)
    if (strncmp(*e, name, n) == 0 && (*e)[n] == '=')
      return *e + n + 1;
  return NULL;
}

/* The first pass over argv: checks the syntax, answers --help and
 * --version, and finds --config.  Returns 0, CAP_CONFIG_HELP,
 * CAP_CONFIG_VERSION or -EINVAL. */
static int scan_argv(int argc, char **argv, const char **config_flag, char *err, size_t errlen) {
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))
      return CAP_CONFIG_HELP;
    if (!strcmp(argv[i], "--version"))
      return CAP_CONFIG_VERSION;
    const struct opt *o = find_flag(argv[i]);
    if (o == NULL) {
      snprintf(err, errlen, "%.64s: unknown option (see --help)", argv[i]);
      return -EINVAL;
    }
    if (o->type == OPT_BOOL)
      continue;
    if (i + 1 >= argc) {
      snprintf(err, errlen, "%s: missing value for %s", o->key, argv[i]);
      return -EINVAL;
    }
    if (strcmp(o->key, "config") == 0)
      *config_flag = argv[i + 1];
    i++;
  }
  return 0;
}

/* Every option's environment variable (CAP_CONFIG was read already). */
static int apply_env(struct cap_config *cfg, char **envp, char *err, size_t errlen) {
  char name[64];
  for (size_t i = 0; i < NOPTS; i++) {
    env_name(&opts[i], name, sizeof(name));
    const char *v = env_get(envp, name);
    if (v && strcmp(opts[i].key, "config") != 0 && set_opt(cfg, &opts[i], v, err, errlen) != 0)
      return -EINVAL;
  }
  return 0;
}

/* The second pass over argv, already checked by scan_argv. */
static int apply_argv(struct cap_config *cfg, int argc, char **argv, char *err, size_t errlen) {
  for (int i = 1; i < argc; i++) {
    const struct opt *o = find_flag(argv[i]);
    const char *v = o->type == OPT_BOOL ? "1" : argv[++i];
    if (set_opt(cfg, o, v, err, errlen) != 0)
      return -EINVAL;
    if (strcmp(o->key, "token") == 0)
      cfg->token_from_argv = 1;
  }
  return 0;
}

/* Checks the settings that depend on each other, once all are in, and
 * takes REGISTRY_TOKEN (never a flag or a file key) from the environment. */
static int check_config(struct cap_config *cfg, char **envp, char *err, size_t errlen) {
  if (cfg->wait_default_s > cfg->wait_max_s) {
    snprintf(err, errlen, "wait_default_s: must not exceed wait_max_s (%d)", cfg->wait_max_s);
    return -EINVAL;
  }
  unsigned char addr[16];
  if (inet_pton(AF_INET, cfg->host, addr) != 1 && inet_pton(AF_INET6, cfg->host, addr) != 1) {
    snprintf(err, errlen, "host: must be an IPv4 or IPv6 address (got \"%.64s\")", cfg->host);
    return -EINVAL;
  }
  const char *rt = env_get(envp, "REGISTRY_TOKEN");
  if (rt && rt[0])
    cfg->registry_token = xstrdup(rt);
  if (cfg->registry_url && cfg->public_host == NULL) {
    snprintf(err, errlen,
             "public_host: required with registry_url (the name Workers reach, "
             "e.g. box.tailnet.ts.net)");
    return -EINVAL;
  }
  if (cfg->registry_url && cfg->registry_token == NULL && cfg->registry_token_file == NULL) {
    snprintf(err, errlen,
             "registry_token_file: required with registry_url (or set REGISTRY_TOKEN)");
    return -EINVAL;
  }
  if (strcmp(cfg->input_mode, "stream") != 0 && strcmp(cfg->input_mode, "download") != 0) {
    snprintf(err, errlen, "input_mode: must be stream or download (got \"%.64s\")",
             cfg->input_mode);
    return -EINVAL;
  }
  if (strcmp(cfg->metrics_auth, "token") != 0 && strcmp(cfg->metrics_auth, "none") != 0) {
    snprintf(err, errlen, "metrics_auth: must be token or none (got \"%.64s\")", cfg->metrics_auth);
    return -EINVAL;
  }
  char mhost[64];
  int mport;
  if (cfg->metrics_listen &&
      cap_config_split_hostport(cfg->metrics_listen, mhost, sizeof(mhost), &mport) != 0) {
    snprintf(err, errlen,
             "metrics_listen: must be IPv4:PORT or [IPv6]:PORT, port 0 to 65535 (got \"%.64s\")",
             cfg->metrics_listen);
    return -EINVAL;
  }
  return 0;
}

int cap_config_load(struct cap_config *cfg, int argc, char **argv, char **envp, char *err,
                    size_t errlen) {
  const char *config_flag = NULL;
  int rc;

  memset(cfg, 0, sizeof(*cfg));
  err[0] = '\0';
  for (size_t i = 0; i < NOPTS; i++)
    if (opts[i].def && set_opt(cfg, &opts[i], opts[i].def, err, errlen) != 0)
      return -EINVAL;
  if ((rc = scan_argv(argc, argv, &config_flag, err, errlen)) != 0)
    return rc;

  const char *path = config_flag ? config_flag : env_get(envp, "CAP_CONFIG");
  if (path && load_file(cfg, path, err, errlen) != 0)
    return -EINVAL;
  if (path && cfg->config_path == NULL)
    cfg->config_path = xstrdup(path);
  if (apply_env(cfg, envp, err, errlen) != 0 || apply_argv(cfg, argc, argv, err, errlen) != 0)
    return -EINVAL;
  return check_config(cfg, envp, err, errlen);
}

int cap_config_split_hostport(const char *s, char *host, size_t hostlen, int *port) {
  const char *colon = strrchr(s, ':'), *h = s;
  size_t n;
  unsigned char addr[16];
  char *end;

  if (colon == NULL)
    return -EINVAL;
  n = (size_t)(colon - s);
  /* An IPv6 address is written in brackets, so that its colons are not
   * taken for the port's. */
  if (n >= 2 && s[0] == '[' && s[n - 1] == ']') {
    h++;
    n -= 2;
  }
  if (n == 0 || n >= hostlen)
    return -EINVAL;
  memcpy(host, h, n);
  host[n] = '\0';
  errno = 0;
  long p = strtol(colon + 1, &end, 10);
  if (errno != 0 || end == colon + 1 || *end != '\0' || p < 0 || p > 65535)
    return -EINVAL;
  if (inet_pton(AF_INET, host, addr) != 1 && (h == s || inet_pton(AF_INET6, host, addr) != 1))
    return -EINVAL;
  *port = (int)p;
  return 0;
}

void cap_config_free(struct cap_config *cfg) {
  if (cfg->registry_token) {
    memset(cfg->registry_token, 0, strlen(cfg->registry_token));
    free(cfg->registry_token);
    cfg->registry_token = NULL;
  }
  for (size_t i = 0; i < NOPTS; i++)
    if (opts[i].type == OPT_STR || opts[i].type == OPT_JSON) {
      char **slot = (char **)((char *)cfg + opts[i].off);
      free(*slot);
      *slot = NULL;
    }
}

void cap_config_usage(void *file) {
  FILE *out = file;
  char flag[64], env[64], arg[80];
  fprintf(out, "Usage: cap-server [options]\n\n"
               "Runs ffmpeg and ffprobe jobs for authenticated HTTP clients.\n"
               "Each option may also be set by the environment variable shown, or by\n"
               "its key in the JSON file given to --config.  Flags win over the\n"
               "environment, which wins over the file.\n\n");
  for (size_t i = 0; i < NOPTS; i++) {
    const struct opt *o = &opts[i];
    flag_name(o, flag, sizeof(flag));
    env_name(o, env, sizeof(env));
    snprintf(arg, sizeof(arg), "%s%s", flag, o->type == OPT_BOOL ? "" : " VALUE");
    fprintf(out, "  %-26s %s", arg, o->help);
    if (o->def && o->type != OPT_BOOL)
      fprintf(out, " [%s]", o->def);
    fprintf(out, "\n  %-26s env %s\n", "", env);
  }
  fprintf(out, "  %-26s %s\n  %-26s %s\n", "--help", "show this text", "--version",
          "show the version");
  fprintf(out, "\nSignals: SIGTERM/SIGINT drain (new jobs refused, running ones get\n"
               "shutdown_grace_ms, then are canceled) and exit 0; a second one cancels at once.\n"
               "SIGHUP reloads tokens, presets and the log level together; SIGUSR1 reopens\n"
               "the log file.\n");
}

char *cap_config_limits_json(const struct cap_config *cfg) {
  struct cap_buf b;
  cap_buf_init(&b);
  cap_buf_printf(&b,
                 "{\"max_connections\":%d,\"max_connections_per_client\":%d,"
                 "\"min_body_rate\":%d,\"max_header_bytes\":%d,\"max_headers\":%d,"
                 "\"max_url_bytes\":%d,\"max_body_bytes\":%d,\"header_timeout_ms\":%d,"
                 "\"body_timeout_ms\":%d,\"idle_timeout_ms\":%d,\"shutdown_grace_ms\":%d,"
                 "\"rate_limit\":%d,\"rate_limit_token\":%d,\"rate_limit_clients\":%d}",
                 cfg->max_connections, cfg->max_connections_per_client, cfg->min_body_rate,
                 cfg->max_header_bytes, cfg->max_headers, cfg->max_url_bytes, cfg->max_body_bytes,
                 cfg->header_timeout_ms, cfg->body_timeout_ms, cfg->idle_timeout_ms,
                 cfg->shutdown_grace_ms, cfg->rate_limit, cfg->rate_limit_token,
                 cfg->rate_limit_clients);
  return cap_buf_steal(&b);
}
