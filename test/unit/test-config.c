#include "config.h"

#include "check.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ARGS(...) ((char *[]){"cap-server", __VA_ARGS__, NULL})
#define NOARGS    ((char *[]){"cap-server", NULL})
#define ENV(...)  ((char *[]){__VA_ARGS__, NULL})
#define NOENV     ((char *[]){NULL})

static char dir[64];
static char file_path[128];
static char file_env[160]; /* "CAP_CONFIG=<file_path>" */
static char err[512];

static int load(struct cap_config *cfg, char **argv, char **envp) {
  int argc = 0;
  while (argv[argc])
    argc++;
  memset(err, 0, sizeof(err));
  return cap_config_load(cfg, argc, argv, envp, err, sizeof(err));
}

static void write_file(const char *text) {
  FILE *f = fopen(file_path, "w");
  if (f == NULL) {
    perror(file_path);
    exit(check_report() | 1); /* The summary still ends the output. */
  }
  fputs(text, f);
  fclose(f);
}

static int starts_with(const char *s, const char *prefix) {
  return strncmp(s, prefix, strlen(prefix)) == 0;
}

static void test_defaults(void) {
  struct cap_config c;
  CHECK_EQ_INT(load(&c, NOARGS, NOENV), 0);
  CHECK_EQ_STR(err, "");
  CHECK_EQ_STR(c.host, "127.0.0.1");
  CHECK_EQ_INT(c.port, 3001);
  CHECK(c.token == NULL);
  CHECK_EQ_INT(c.token_from_argv, 0);
  CHECK(c.token_file == NULL);
  CHECK(c.config_path == NULL);
  CHECK_EQ_INT(c.log_level, CAP_LOG_INFO);
  CHECK(c.log_file == NULL);
  CHECK_EQ_INT(c.rate_limit, 30);
  CHECK_EQ_INT(c.rate_limit_token, 120);
  CHECK_EQ_INT(c.rate_limit_clients, 10000);
  CHECK_EQ_STR(c.trusted_proxies, "127.0.0.0/8,::1");
  CHECK_EQ_INT(c.max_connections, 1024);
  CHECK_EQ_INT(c.max_header_bytes, 8192);
  CHECK_EQ_INT(c.max_headers, 64);
  CHECK_EQ_INT(c.max_url_bytes, 2048);
  CHECK_EQ_INT(c.max_body_bytes, 65536);
  CHECK_EQ_INT(c.header_timeout_ms, 10000);
  CHECK_EQ_INT(c.body_timeout_ms, 30000);
  CHECK_EQ_INT(c.idle_timeout_ms, 60000);
  CHECK_EQ_INT(c.shutdown_grace_ms, 120000);
  CHECK_EQ_INT(c.drain_linger_ms, 10000);
  CHECK_EQ_STR(c.data_dir, "./data");
  CHECK_EQ_INT(c.insecure_no_auth, 0);
  cap_config_free(&c);
  CHECK(c.host == NULL);
  CHECK(c.data_dir == NULL);
  CHECK(c.trusted_proxies == NULL);
}

static void test_every_flag(void) {
  struct cap_config c;
  int rc =
      load(&c,
           ARGS("--host", "0.0.0.0", "--port", "0", "--token-file", "/tmp/tokens", "--log-level",
                "debug", "--log-file", "/tmp/x.log", "--rate-limit", "5", "--rate-limit-token", "6",
                "--rate-limit-clients", "7", "--trusted-proxies", "10.0.0.0/8", "--max-connections",
                "8", "--max-header-bytes", "256", "--max-headers", "9", "--max-url-bytes", "16",
                "--max-body-bytes", "64", "--header-timeout-ms", "100", "--body-timeout-ms", "101",
                "--idle-timeout-ms", "102", "--shutdown-grace-ms", "0", "--data-dir", "/srv/data",
                "--insecure-no-auth"),
           NOENV);
  CHECK_EQ_INT(rc, 0);
  CHECK_EQ_STR(err, "");
  CHECK_EQ_STR(c.host, "0.0.0.0");
  CHECK_EQ_INT(c.port, 0);
  CHECK_EQ_STR(c.token_file, "/tmp/tokens");
  CHECK_EQ_INT(c.log_level, CAP_LOG_DEBUG);
  CHECK_EQ_STR(c.log_file, "/tmp/x.log");
  CHECK_EQ_INT(c.rate_limit, 5);
  CHECK_EQ_INT(c.rate_limit_token, 6);
  CHECK_EQ_INT(c.rate_limit_clients, 7);
  CHECK_EQ_STR(c.trusted_proxies, "10.0.0.0/8");
  CHECK_EQ_INT(c.max_connections, 8);
  CHECK_EQ_INT(c.max_header_bytes, 256);
  CHECK_EQ_INT(c.max_headers, 9);
  CHECK_EQ_INT(c.max_url_bytes, 16);
  CHECK_EQ_INT(c.max_body_bytes, 64);
  CHECK_EQ_INT(c.header_timeout_ms, 100);
  CHECK_EQ_INT(c.body_timeout_ms, 101);
  CHECK_EQ_INT(c.idle_timeout_ms, 102);
  CHECK_EQ_INT(c.shutdown_grace_ms, 0);
  CHECK_EQ_STR(c.data_dir, "/srv/data");
  CHECK_EQ_INT(c.insecure_no_auth, 1);
  CHECK(c.token == NULL);
  CHECK_EQ_INT(c.token_from_argv, 0);
  cap_config_free(&c);

  /* The last of a repeated flag wins. */
  CHECK_EQ_INT(load(&c, ARGS("--port", "1", "--port", "2"), NOENV), 0);
  CHECK_EQ_INT(c.port, 2);
  cap_config_free(&c);
}

static void test_bool_flag(void) {
  struct cap_config c;
  /* A bool flag takes no value: the next argument is a flag again. */
  CHECK_EQ_INT(load(&c, ARGS("--insecure-no-auth", "--port", "5"), NOENV), 0);
  CHECK_EQ_INT(c.insecure_no_auth, 1);
  CHECK_EQ_INT(c.port, 5);
  cap_config_free(&c);
  /* "--insecure-no-auth false" leaves "false" as an unknown option. */
  CHECK_EQ_INT(load(&c, ARGS("--insecure-no-auth", "false"), NOENV), -EINVAL);
  CHECK(starts_with(err, "false"));
  cap_config_free(&c);

  static const char *const truthy[] = {"1", "true", "yes"};
  static const char *const falsy[] = {"0", "false", "no"};
  char envbuf[64];
  for (size_t i = 0; i < 3; i++) {
    snprintf(envbuf, sizeof(envbuf), "CAP_INSECURE_NO_AUTH=%s", truthy[i]);
    CHECK_EQ_INT(load(&c, NOARGS, ENV(envbuf)), 0);
    CHECK_EQ_INT(c.insecure_no_auth, 1);
    cap_config_free(&c);
    snprintf(envbuf, sizeof(envbuf), "CAP_INSECURE_NO_AUTH=%s", falsy[i]);
    CHECK_EQ_INT(load(&c, NOARGS, ENV(envbuf)), 0);
    CHECK_EQ_INT(c.insecure_no_auth, 0);
    cap_config_free(&c);
  }
  /* The flag beats an env var that says false. */
  CHECK_EQ_INT(load(&c, ARGS("--insecure-no-auth"), ENV("CAP_INSECURE_NO_AUTH=0")), 0);
  CHECK_EQ_INT(c.insecure_no_auth, 1);
  cap_config_free(&c);
  CHECK_EQ_INT(load(&c, NOARGS, ENV("CAP_INSECURE_NO_AUTH=maybe")), -EINVAL);
  CHECK(starts_with(err, "insecure_no_auth:"));
  cap_config_free(&c);
}

static void test_precedence(void) {
  struct cap_config c;
  write_file(
      "{\"port\": 1111, \"host\": \"10.1.1.1\", \"log_level\": \"warn\", \"rate_limit\": 7}");

  /* File only. */
  CHECK_EQ_INT(load(&c, ARGS("--config", file_path), NOENV), 0);
  CHECK_EQ_INT(c.port, 1111);
  CHECK_EQ_STR(c.host, "10.1.1.1");
  CHECK_EQ_INT(c.log_level, CAP_LOG_WARN);
  CHECK_EQ_INT(c.rate_limit, 7);
  CHECK_EQ_STR(c.config_path, file_path);
  CHECK_EQ_INT(c.max_headers, 64); /* Not in the file: default. */
  cap_config_free(&c);

  /* Env beats file. */
  CHECK_EQ_INT(load(&c, ARGS("--config", file_path), ENV("CAP_PORT=2222", "CAP_LOG_LEVEL=error")),
               0);
  CHECK_EQ_INT(c.port, 2222);
  CHECK_EQ_INT(c.log_level, CAP_LOG_ERROR);
  CHECK_EQ_STR(c.host, "10.1.1.1");
  cap_config_free(&c);

  /* Flag beats env beats file, whatever the order of the flags. */
  CHECK_EQ_INT(load(&c, ARGS("--port", "3333", "--config", file_path), ENV("CAP_PORT=2222")), 0);
  CHECK_EQ_INT(c.port, 3333);
  CHECK_EQ_INT(c.rate_limit, 7);
  cap_config_free(&c);

  /* The config file named by CAP_CONFIG. */
  CHECK_EQ_INT(load(&c, NOARGS, ENV("CAP_HOST=::1", file_env)), 0);
  CHECK_EQ_INT(c.port, 1111);
  CHECK_EQ_STR(c.host, "::1");
  CHECK_EQ_STR(c.config_path, file_path);
  cap_config_free(&c);

  /* --config beats CAP_CONFIG. */
  CHECK_EQ_INT(load(&c, ARGS("--config", file_path), ENV("CAP_CONFIG=/nonexistent/cap.json")), 0);
  CHECK_EQ_INT(c.port, 1111);
  cap_config_free(&c);

  /* Env names must match exactly. */
  CHECK_EQ_INT(load(&c, NOARGS, ENV("CAP_PORTX=9", "CAP_PORT", "XCAP_PORT=8", "cap_port=7")), 0);
  CHECK_EQ_INT(c.port, 3001);
  cap_config_free(&c);
  CHECK_EQ_INT(load(&c, NOARGS, ENV("CAP_MAX_BODY_BYTES=1000", "CAP_DATA_DIR=/d")), 0);
  CHECK_EQ_INT(c.max_body_bytes, 1000);
  CHECK_EQ_STR(c.data_dir, "/d");
  cap_config_free(&c);
}

static void test_token_sources(void) {
  struct cap_config c;
  const char *tok = "0123456789abcdef0123";

  CHECK_EQ_INT(load(&c, NOARGS, ENV("CAPABILITY_TOKEN=from-env-0123456789")), 0);
  CHECK_EQ_STR(c.token, "from-env-0123456789");
  CHECK_EQ_INT(c.token_from_argv, 0);
  cap_config_free(&c);

  write_file("{\"token\": \"from-file-0123456789\"}");
  CHECK_EQ_INT(load(&c, ARGS("--config", file_path), NOENV), 0);
  CHECK_EQ_STR(c.token, "from-file-0123456789");
  CHECK_EQ_INT(c.token_from_argv, 0);
  cap_config_free(&c);

  CHECK_EQ_INT(load(&c, ARGS("--token", (char *)tok), ENV("CAPABILITY_TOKEN=from-env-0123456789")),
               0);
  CHECK_EQ_STR(c.token, tok);
  CHECK_EQ_INT(c.token_from_argv, 1);
  cap_config_free(&c);

  /* --token-file is not --token. */
  CHECK_EQ_INT(load(&c, ARGS("--token-file", "/tmp/t"), NOENV), 0);
  CHECK_EQ_INT(c.token_from_argv, 0);
  CHECK(c.token == NULL);
  cap_config_free(&c);
}

static void test_trusted_proxies_array(void) {
  struct cap_config c;
  write_file("{\"trusted_proxies\": [\"10.0.0.0/8\", \"::1\", \"192.168.1.1\"]}");
  CHECK_EQ_INT(load(&c, ARGS("--config", file_path), NOENV), 0);
  CHECK_EQ_STR(c.trusted_proxies, "10.0.0.0/8,::1,192.168.1.1");
  cap_config_free(&c);

  write_file("{\"trusted_proxies\": \"10.0.0.1, 10.0.0.2\"}");
  CHECK_EQ_INT(load(&c, ARGS("--config", file_path), NOENV), 0);
  CHECK_EQ_STR(c.trusted_proxies, "10.0.0.1, 10.0.0.2");
  cap_config_free(&c);

  write_file("{\"trusted_proxies\": [\"10.0.0.1\", 5]}");
  CHECK_EQ_INT(load(&c, ARGS("--config", file_path), NOENV), -EINVAL);
  CHECK(starts_with(err, "trusted_proxies:"));
  cap_config_free(&c);

  /* Only trusted_proxies takes an array. */
  write_file("{\"data_dir\": [\"a\"]}");
  CHECK_EQ_INT(load(&c, ARGS("--config", file_path), NOENV), -EINVAL);
  CHECK(starts_with(err, "data_dir:"));
  cap_config_free(&c);
}

static void test_file_types(void) {
  struct cap_config c;
  write_file("{\"insecure_no_auth\": true, \"max_headers\": 10.0, \"log_file\": \"/tmp/l\"}");
  CHECK_EQ_INT(load(&c, ARGS("--config", file_path), NOENV), 0);
  CHECK_EQ_INT(c.insecure_no_auth, 1);
  CHECK_EQ_INT(c.max_headers, 10);
  CHECK_EQ_STR(c.log_file, "/tmp/l");
  cap_config_free(&c);
  write_file("{}");
  CHECK_EQ_INT(load(&c, ARGS("--config", file_path), NOENV), 0);
  CHECK_EQ_INT(c.port, 3001);
  cap_config_free(&c);
}

struct err_case {
  char **argv;
  char **envp;
  const char *file; /* Written to file_path first when not NULL. */
  const char *prefix;
  const char *contains; /* May be NULL. */
};

static void test_errors(void) {
  char with_file[] = "--config";
  const struct err_case cases[] = {
      {ARGS("--port", "70000"), NOENV, NULL, "port:", "70000"},
      {ARGS("--port", "-1"), NOENV, NULL, "port:", NULL},
      {ARGS("--port", "abc"), NOENV, NULL, "port:", "abc"},
      {ARGS("--port", "80x"), NOENV, NULL, "port:", NULL},
      {ARGS("--port", ""), NOENV, NULL, "port:", NULL},
      {ARGS("--port", "99999999999999999999999"), NOENV, NULL, "port:", NULL},
      {ARGS("--max-body-bytes", "63"), NOENV, NULL, "max_body_bytes:", NULL},
      {ARGS("--max-headers", "0"), NOENV, NULL, "max_headers:", NULL},
      {ARGS("--rate-limit", "0"), NOENV, NULL, "rate_limit:", NULL},
      {ARGS("--bogus"), NOENV, NULL, "--bogus", "unknown"},
      {ARGS("--port=80"), NOENV, NULL, "--port=80", "unknown"},
      {ARGS("positional"), NOENV, NULL, "positional", "unknown"},
      {ARGS("--port"), NOENV, NULL, "port:", "missing"},
      {ARGS("--insecure-no-auth", "--host"), NOENV, NULL, "host:", "missing"},
      {ARGS("--host", ""), NOENV, NULL, "host:", "empty"},
      {ARGS("--host", "localhost"), NOENV, NULL, "host:", "localhost"},
      {NOARGS, ENV("CAP_HOST=1.2.3.4.5"), NULL, "host:", NULL},
      {ARGS("--log-level", "verbose"), NOENV, NULL, "log_level:", "verbose"},
      {ARGS("--log-level", "INFO "), NOENV, NULL, "log_level:", NULL},
      {NOARGS, ENV("CAP_LOG_LEVEL=loud"), NULL, "log_level:", "loud"},
      {NOARGS, ENV("CAP_PORT=abc"), NULL, "port:", "abc"},
      {NOARGS, ENV("CAP_MAX_CONNECTIONS=0"), NULL, "max_connections:", NULL},
      {ARGS("--config", "/nonexistent/dir/cap.json"), NOENV, NULL, "config:", "/nonexistent"},
      {NOARGS, ENV("CAP_CONFIG=/nonexistent/dir/cap.json"), NULL, "config:", NULL},
      /* The config file itself. */
      {ARGS(with_file, file_path), NOENV, "{\"bogus\": 1}", "config:", "bogus"},
      {ARGS(with_file, file_path), NOENV, "{\"config\": \"/x\"}", "config:", "unknown"},
      {ARGS(with_file, file_path), NOENV, "not json", "config:", NULL},
      {ARGS(with_file, file_path), NOENV, "", "config:", NULL},
      {ARGS(with_file, file_path), NOENV, "[1, 2]", "config:", NULL},
      {ARGS(with_file, file_path), NOENV, "\"port\"", "config:", NULL},
      {ARGS(with_file, file_path), NOENV, "{\"port\": 1", "config:", NULL},
      {ARGS(with_file, file_path), NOENV, "{\"port\": 1} trailing", "config:", NULL},
      {ARGS(with_file, file_path), NOENV, "{\"port\": \"80\"}", "port:", "integer"},
      {ARGS(with_file, file_path), NOENV, "{\"port\": 80.5}", "port:", "integer"},
      {ARGS(with_file, file_path), NOENV, "{\"port\": 70000}", "port:", NULL},
      {ARGS(with_file, file_path), NOENV, "{\"port\": true}", "port:", NULL},
      {ARGS(with_file, file_path), NOENV, "{\"port\": null}", "port:", NULL},
      {ARGS(with_file, file_path), NOENV, "{\"host\": 5}", "host:", "string"},
      {ARGS(with_file, file_path), NOENV, "{\"host\": \"\"}", "host:", "empty"},
      {ARGS(with_file, file_path), NOENV, "{\"insecure_no_auth\": \"yes\"}",
       "insecure_no_auth:", NULL},
      {ARGS(with_file, file_path), NOENV, "{\"insecure_no_auth\": 1}", "insecure_no_auth:", NULL},
      {ARGS(with_file, file_path), NOENV, "{\"log_level\": 1}", "log_level:", NULL},
      {ARGS(with_file, file_path), NOENV, "{\"log_level\": \"bad\"}", "log_level:", "bad"},
      {ARGS(with_file, file_path), NOENV, "{\"max_headers\": {}}", "max_headers:", NULL},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    const struct err_case *e = &cases[i];
    struct cap_config c;
    if (e->file)
      write_file(e->file);
    int rc = load(&c, e->argv, e->envp);
    int ok = CHECK_EQ_INT(rc, -EINVAL);
    ok &= CHECK(starts_with(err, e->prefix));
    if (e->contains)
      ok &= CHECK(strstr(err, e->contains) != NULL);
    ok &= CHECK(strchr(err, '\n') == NULL); /* One line. */
    if (!ok)
      fprintf(stderr, "  (error case %zu: err=\"%s\", want prefix \"%s\")\n", i, err, e->prefix);
    cap_config_free(&c);
  }
}

static void test_help_version(void) {
  struct cap_config c;
  CHECK_EQ_INT(load(&c, ARGS("--help"), NOENV), CAP_CONFIG_HELP);
  cap_config_free(&c);
  CHECK_EQ_INT(load(&c, ARGS("-h"), NOENV), CAP_CONFIG_HELP);
  cap_config_free(&c);
  CHECK_EQ_INT(load(&c, ARGS("--port", "1", "--help"), NOENV), CAP_CONFIG_HELP);
  cap_config_free(&c);
  CHECK_EQ_INT(load(&c, ARGS("--version"), NOENV), CAP_CONFIG_VERSION);
  cap_config_free(&c);
  CHECK_EQ_INT(load(&c, ARGS("--insecure-no-auth", "--version"), NOENV), CAP_CONFIG_VERSION);
  cap_config_free(&c);
  /* --help wins even over a broken environment. */
  CHECK_EQ_INT(load(&c, ARGS("--help"), ENV("CAP_PORT=abc")), CAP_CONFIG_HELP);
  cap_config_free(&c);
}

static void test_usage_and_limits(void) {
  FILE *f = tmpfile();
  if (!CHECK(f != NULL))
    return;
  cap_config_usage(f);
  long n = ftell(f);
  CHECK(n > 0);
  char *text = calloc(1, (size_t)n + 1);
  rewind(f);
  CHECK_EQ_INT(fread(text, 1, (size_t)n, f), n);
  fclose(f);
  static const char *const want[] = {"--port VALUE",     "CAP_PORT",         "--insecure-no-auth",
                                     "CAPABILITY_TOKEN", "--max-body-bytes", "CAP_MAX_BODY_BYTES",
                                     "--help",           "--version",        "--token-file"};
  for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
    if (!CHECK(strstr(text, want[i]) != NULL))
      fprintf(stderr, "  usage lacks %s\n", want[i]);
  CHECK(strstr(text, "--insecure-no-auth VALUE") == NULL);
  free(text);

  struct cap_config c;
  CHECK_EQ_INT(load(&c, ARGS("--max-body-bytes", "1234", "--rate-limit", "3"), NOENV), 0);
  char *json = cap_config_limits_json(&c);
  cJSON *j = cJSON_Parse(json);
  if (CHECK(cJSON_IsObject(j))) {
    CHECK_EQ_INT(cJSON_GetNumberValue(cJSON_GetObjectItem(j, "max_body_bytes")), 1234);
    CHECK_EQ_INT(cJSON_GetNumberValue(cJSON_GetObjectItem(j, "rate_limit")), 3);
    CHECK_EQ_INT(cJSON_GetNumberValue(cJSON_GetObjectItem(j, "max_headers")), 64);
    CHECK_EQ_INT(cJSON_GetNumberValue(cJSON_GetObjectItem(j, "rate_limit_clients")), 10000);
    CHECK(cJSON_GetObjectItem(j, "token") == NULL);
  }
  cJSON_Delete(j);
  free(json);
  cap_config_free(&c);
}

int main(void) {
  snprintf(dir, sizeof(dir), "/tmp/cap-test-config-XXXXXX");
  if (mkdtemp(dir) == NULL) {
    perror("mkdtemp");
    return 1;
  }
  snprintf(file_path, sizeof(file_path), "%s/cap.json", dir);
  snprintf(file_env, sizeof(file_env), "CAP_CONFIG=%s", file_path);

  test_defaults();
  test_every_flag();
  test_bool_flag();
  test_precedence();
  test_token_sources();
  test_trusted_proxies_array();
  test_file_types();
  test_errors();
  test_help_version();
  test_usage_and_limits();

  unlink(file_path);
  rmdir(dir);
  return check_report();
}
