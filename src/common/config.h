#ifndef CAP_CONFIG_H
#define CAP_CONFIG_H

#include "log.h"

#include <stddef.h>

/* Every setting of the server.  Each one can be given as a flag
 * (--max-body-bytes), an environment variable (CAP_MAX_BODY_BYTES) or a key
 * of the JSON config file (max_body_bytes); flags win over the environment,
 * which wins over the file, which wins over the defaults. */
struct cap_config {
  char *host;
  int port;
  char *token;         /* --token or CAPABILITY_TOKEN; may be NULL. */
  int token_from_argv; /* The token was on the command line (visible in ps). */
  char *token_file;
  char *config_path;
  enum cap_log_level log_level;
  char *log_file;
  int rate_limit;       /* /exec requests per minute per client address. */
  int rate_limit_token; /* /exec requests per minute per token. */
  int rate_limit_clients;
  char *trusted_proxies; /* Comma-separated IPs and CIDRs. */
  int max_connections;
  int max_connections_per_client;
  int min_body_rate;
  int max_header_bytes;
  int max_headers;
  int max_url_bytes;
  int max_body_bytes;
  int header_timeout_ms;
  int body_timeout_ms;
  int idle_timeout_ms;
  int shutdown_grace_ms;
  int drain_linger_ms;
  char *metrics_listen; /* HOST:PORT, or NULL: /metrics on the main port. */
  char *metrics_auth;   /* "token" or "none". */
  /* Registry. */
  char *registry_url;
  char *registry_token_file;
  char *registry_token; /* From REGISTRY_TOKEN only (never a flag). */
  char *public_host;
  int public_port;
  int heartbeat_s;
  char *data_dir;
  int insecure_no_auth;
  /* Jobs. */
  char *presets; /* Presets file; NULL means the built-in set. */
  int pool_cpu;  /* 0 means half the cores, rounded up. */
  int pool_nvenc;
  int queue_max;
  int job_timeout_s;
  int job_ttl_s;
  int jobs_max;
  int wait_default_s;
  int wait_max_s;
  int cancel_grace_ms;
  int cancel_on_disconnect;
  char *ffmpeg;
  char *ffprobe;
  char *token_prefixes; /* JSON text: {"token name":{"input":[...],"output":[...]}} */
  /* Children: what they may read and how much they may use. */
  char *sandbox;            /* "off", "best-effort" or "required". */
  int sandbox_abi;          /* Apply at most this Landlock ABI; 0: what the kernel offers. */
  char *sandbox_read_paths; /* Extra read-only paths, comma-separated. */
  char *input_formats;      /* Demuxers inputs may have, comma-separated. */
  char *class_limits; /* JSON text: {"class":{"nice":..,"ionice":..,"memory_mb":..,"threads":..}} */
  int output_max_mb;  /* Largest file a child may write. */
  /* Ladder jobs: uploads at once, and the local backlog that pauses ffmpeg. */
  int ladder_uploads;
  int ladder_backlog_segments;
  int ladder_backlog_mb;
  /* Storage. */
  char *storage; /* file:///DIR, s3://BUCKET[/PREFIX] or r2://BUCKET[/PREFIX]; NULL: data_dir. */
  int s3_virtual_host;
  int part_size;
  int parts_in_flight;
  int upload_budget_mb;
  int storage_retries;
  int storage_backoff_ms;
  int storage_low_speed_s;
  int input_max_mb;
  char *input_mode; /* "stream" or "download": how S3/R2 inputs are read. */
  int orphan_age_s;
  int orphan_sweep_s;
  char *storage_credentials_file;
  /* The journal (jobs and the webhook outbox on disk). */
  char *journal;      /* "on" or "off". */
  char *journal_path; /* NULL: <data_dir>/journal.db. */
  int journal_reset;  /* Move the journal aside and start empty. */
  /* Webhooks. */
  char *webhook_secrets_file;
  char *callback_hosts;
  char *callback_allow_cidrs;
  char *callback_ca_file;
  int callback_retry_s;
  int callback_backoff_ms;
  int callback_timeout_ms;
  int callback_concurrency;
  int callback_progress_ms;
};

/* The demuxers an input may be read with unless configured otherwise:
 * containers and elementary streams that read only their own bytes.  No
 * playlist or reference formats (hls, dash, concat, image2, ffmetadata),
 * no devices or generators (lavfi, v4l2), no network descriptions (sdp,
 * rtp, rtsp), no subtitle or text formats (tty, vobsub, srt, ass). */
#define CAP_DEFAULT_INPUT_FORMATS                                                                  \
  "mov,matroska,mpegts,mpeg,avi,flv,asf,mxf,ogg,nut,ivf,dv,mp3,aac,ac3,eac3,dts,wav,w64,flac,"     \
  "aiff,caf,wv,mpegvideo,h264,hevc,m4v,yuv4mpegpipe"
/* Per resource class: CPU renders run at lower CPU and I/O priority than
 * the server's loop; hardware encodes keep normal priority so the GPU's
 * feeder is not starved.  memory_mb is RLIMIT_DATA, the writable memory a
 * decoder can actually allocate; RLIMIT_AS (address_space_mb) stays off by
 * default because it also counts reservations that use no memory (glibc's
 * 64 MiB malloc arena per busy thread, the CUDA driver's address space). */
#define CAP_DEFAULT_CLASS_LIMITS                                                                   \
  "{\"cpu\":{\"nice\":10,\"ionice\":\"best-effort:7\",\"memory_mb\":8192,\"threads\":0},"          \
  "\"nvenc\":{\"nice\":0,\"ionice\":\"best-effort:4\",\"memory_mb\":0,\"threads\":0}}"

/* Results of cap_config_load besides 0 and -EINVAL. */
#define CAP_CONFIG_HELP    1
#define CAP_CONFIG_VERSION 2

/* Fills cfg from defaults, the config file, envp and argv in rising order of
 * precedence.  Returns 0, CAP_CONFIG_HELP, CAP_CONFIG_VERSION, or -EINVAL
 * with one line naming the key and the problem in err.  cfg owns its
 * strings; release them with cap_config_free. */
int cap_config_load(struct cap_config *cfg, int argc, char **argv, char **envp, char *err,
                    size_t errlen);
void cap_config_free(struct cap_config *cfg);
/* Splits "IPv4:PORT" or "[IPv6]:PORT" into host (a NUL-terminated copy in
 * hostlen bytes) and port.  Returns 0 or -EINVAL. */
int cap_config_split_hostport(const char *s, char *host, size_t hostlen, int *port);
/* Writes the --help text to out. */
void cap_config_usage(void *file);
/* Returns the limits part of the config as a JSON object; the caller frees it. */
char *cap_config_limits_json(const struct cap_config *cfg);

#endif
