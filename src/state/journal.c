#include "journal.h"

#include "alloc.h"
#include "log.h"
#include "metrics.h"

#include <uv.h>

#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* The schema's version, kept in PRAGMA user_version: a journal written by
 * a newer cap-server is refused rather than misread. */
#define SCHEMA_VERSION 1

/* The checkpointer looks this often; it copies the WAL into the database
 * once the WAL has grown past CHECKPOINT_WAL_BYTES or has waited
 * CHECKPOINT_MAX_AGE_MS since the last write. */
#define CHECKPOINT_TICK_MS    2000
#define CHECKPOINT_WAL_BYTES  (1 << 20)
#define CHECKPOINT_MAX_AGE_MS 10000
/* The WAL is cut back to this when it is rewound, so that a burst does not
 * leave a large file behind. */
#define WAL_SIZE_LIMIT (4 << 20)
/* A write that finds the database locked (a checkpoint taking its lock at
 * the same moment) waits at most this long; a passive checkpoint never
 * holds the writer's lock, so this is a bound, not an expected wait. */
#define BUSY_TIMEOUT_MS 200
/* A failing write is logged at most this often per statement. */
#define ERROR_LOG_EVERY_MS 60000

static const char schema[] =
    "CREATE TABLE IF NOT EXISTS jobs("
    " id TEXT PRIMARY KEY, owner TEXT NOT NULL, req_id TEXT, capability TEXT, preset TEXT,"
    " idem_key TEXT, body_hash BLOB, state TEXT NOT NULL, code TEXT,"
    " created_at INTEGER NOT NULL, started_at INTEGER, finished_at INTEGER,"
    " input_key TEXT, output_key TEXT, output_prefix TEXT, upload_id TEXT,"
    " callback_url TEXT, callback_events TEXT, job_json TEXT, answer_json TEXT);"
    "CREATE INDEX IF NOT EXISTS jobs_finished ON jobs(finished_at);"
    "CREATE TABLE IF NOT EXISTS objects("
    " job_id TEXT NOT NULL, key TEXT NOT NULL, PRIMARY KEY(job_id, key)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS outbox("
    " id TEXT PRIMARY KEY, job_id TEXT, owner TEXT NOT NULL, url TEXT NOT NULL,"
    " type TEXT NOT NULL, body TEXT NOT NULL, attempts INTEGER NOT NULL,"
    " created_at INTEGER NOT NULL, next_at INTEGER NOT NULL);";

enum stmt {
  S_JOB_PUT,
  S_JOB_LOAD,
  S_JOB_DELETE,
  S_JOB_PURGE,
  S_OBJ_PURGE,
  S_OBJ_ADD,
  S_OBJ_LOAD,
  S_OBJ_CLEAR,
  S_EV_ADD,
  S_EV_UPDATE,
  S_EV_DELETE,
  S_EV_LOAD,
  S__COUNT
};

static const char *const sql[S__COUNT] = {
    [S_JOB_PUT] = "INSERT OR REPLACE INTO jobs VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,"
                  "?13,?14,?15,?16,?17,?18,?19,?20)",
    [S_JOB_LOAD] = "SELECT id, owner, req_id, capability, preset, idem_key, body_hash, state, code,"
                   " created_at, started_at, finished_at, input_key, output_key, output_prefix,"
                   " upload_id, callback_url, callback_events, job_json, answer_json"
                   " FROM jobs ORDER BY created_at, rowid",
    [S_JOB_DELETE] = "DELETE FROM jobs WHERE id = ?1",
    [S_JOB_PURGE] = "DELETE FROM jobs WHERE finished_at > 0 AND finished_at < ?1",
    [S_OBJ_PURGE] = "DELETE FROM objects WHERE job_id NOT IN (SELECT id FROM jobs)",
    [S_OBJ_ADD] = "INSERT OR IGNORE INTO objects VALUES(?1, ?2)",
    [S_OBJ_LOAD] = "SELECT key FROM objects WHERE job_id = ?1 ORDER BY key",
    [S_OBJ_CLEAR] = "DELETE FROM objects WHERE job_id = ?1",
    [S_EV_ADD] = "INSERT OR REPLACE INTO outbox VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9)",
    [S_EV_UPDATE] = "UPDATE outbox SET attempts = ?2, next_at = ?3 WHERE id = ?1",
    [S_EV_DELETE] = "DELETE FROM outbox WHERE id = ?1",
    [S_EV_LOAD] = "SELECT id, job_id, owner, url, type, body, attempts, created_at, next_at"
                  " FROM outbox ORDER BY created_at, rowid",
};

/* The state of the checkpointer, the one piece of work that leaves the
 * loop's thread. */
enum ckpt_state { CKPT_IDLE, CKPT_RUNNING, CKPT_STOPPED };

struct cap_journal {
  sqlite3 *db;
  char *path;
  int lock_fd; /* flock'ed "<path>.lock": one server per journal. */
  sqlite3_stmt *st[S__COUNT];
  struct cap_journal_stats stats;
  uint64_t last_error_log_ms[S__COUNT];
  /* Checkpoints, on libuv's thread pool with their own connection. */
  uv_loop_t *loop;
  /* The checkpointer's own connection, opened with the timer and used only
   * by the one checkpoint under way.  Held open, not opened per
   * checkpoint: SQLite cannot close a file descriptor while another
   * connection of the process holds locks on the file (POSIX locks belong
   * to the process), so a closed connection would leave a descriptor
   * behind anyway. */
  sqlite3 *ckpt_db;
  uv_timer_t timer;
  uv_work_t work;
  enum ckpt_state ckpt;
  int timer_open;
  int ckpt_rc;
  int ckpt_log, ckpt_done; /* The last checkpoint's WAL frames, and those it copied. */
  double ckpt_s;
  int in_txn;              /* Between cap_journal_begin and cap_journal_commit. */
  double txn_t0;           /* When the transaction began. */
  uint64_t dirty_since_ms; /* Loop time of the first write since the last checkpoint; 0: none. */
};

static uint64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static double mono_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int64_t file_size(const char *path, const char *suffix) {
  char p[4200];
  struct stat sb;
  snprintf(p, sizeof(p), "%s%s", path, suffix);
  return stat(p, &sb) == 0 ? (int64_t)sb.st_size : 0;
}

static int64_t total_size(const char *path) {
  return file_size(path, "") + file_size(path, "-wal");
}

static int errno_of(int rc) {
  switch (rc & 0xff) {
  case SQLITE_FULL:
    return -ENOSPC;
  case SQLITE_READONLY:
  case SQLITE_PERM:
    return -EACCES;
  case SQLITE_BUSY:
  case SQLITE_LOCKED:
    return -EBUSY;
  case SQLITE_NOMEM:
    return -ENOMEM;
  case SQLITE_CORRUPT:
  case SQLITE_NOTADB:
    return -EILSEQ;
  case SQLITE_CANTOPEN:
    return -ENOENT;
  default:
    return -EIO;
  }
}

/* Moves path (and its WAL and shared-memory files) aside, so that a
 * journal that cannot be read is kept for inspection, not destroyed. */
static int move_aside(const char *path, char *err, size_t errlen) {
  static const char *const suffix[] = {"", "-wal", "-shm"};
  long now = (long)time(NULL);
  for (size_t i = 0; i < 3; i++) {
    char from[4200], to[4300];
    snprintf(from, sizeof(from), "%s%s", path, suffix[i]);
    snprintf(to, sizeof(to), "%s.broken-%ld%s", path, now, suffix[i]);
    if (rename(from, to) != 0 && errno != ENOENT) {
      int e = errno;
      snprintf(err, errlen, "journal: cannot move %s aside: %s", from, strerror(e));
      return -e;
    }
    if (i == 0 && access(to, F_OK) == 0) {
      struct cap_log_rec *r = cap_log_begin(CAP_LOG_WARN, "journal.reset");
      cap_log_str(r, "path", path);
      cap_log_str(r, "moved_to", to);
      cap_log_end(r);
    }
  }
  return 0;
}

static int exec_sql(sqlite3 *db, const char *s) {
  return sqlite3_exec(db, s, NULL, NULL, NULL);
}

/* Checks that the file is a database this server can use: readable
 * throughout (quick_check reads every page), and of a schema version it
 * knows. */
static int check_db(struct cap_journal *jr, char *err, size_t errlen) {
  sqlite3_stmt *q = NULL;
  int rc = sqlite3_prepare_v2(jr->db, "PRAGMA quick_check", -1, &q, NULL);
  if (rc == SQLITE_OK)
    rc = sqlite3_step(q);
  const char *res = rc == SQLITE_ROW ? (const char *)sqlite3_column_text(q, 0) : NULL;
  if (res == NULL || strcmp(res, "ok") != 0) {
    snprintf(err, errlen,
             "journal: %s is not a usable database (%s); move it aside with --journal-reset "
             "(finished jobs and pending webhooks it held are then forgotten)",
             jr->path, res ? res : sqlite3_errmsg(jr->db));
    sqlite3_finalize(q);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? -EILSEQ : errno_of(rc);
  }
  sqlite3_finalize(q);
  q = NULL;
  rc = sqlite3_prepare_v2(jr->db, "PRAGMA user_version", -1, &q, NULL);
  int version = rc == SQLITE_OK && sqlite3_step(q) == SQLITE_ROW ? sqlite3_column_int(q, 0) : -1;
  sqlite3_finalize(q);
  if (version > SCHEMA_VERSION || version < 0) {
    snprintf(err, errlen,
             "journal: %s has schema version %d, this cap-server knows %d; run the newer "
             "cap-server or move it aside with --journal-reset",
             jr->path, version, SCHEMA_VERSION);
    return -EPROTO;
  }
  return 0;
}

static int setup_db(struct cap_journal *jr, char *err, size_t errlen) {
  char pragmas[256];
  snprintf(pragmas, sizeof(pragmas),
           "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA wal_autocheckpoint=0;"
           " PRAGMA journal_size_limit=%d;",
           WAL_SIZE_LIMIT);
  int rc = exec_sql(jr->db, pragmas);
  if (rc == SQLITE_OK)
    rc = exec_sql(jr->db, schema);
  if (rc == SQLITE_OK) {
    char v[64];
    snprintf(v, sizeof(v), "PRAGMA user_version=%d", SCHEMA_VERSION);
    rc = exec_sql(jr->db, v);
  }
  if (rc != SQLITE_OK) {
    snprintf(err, errlen,
             "journal: cannot set up %s: %s; check the directory's permissions and "
             "free space, or move it aside with --journal-reset",
             jr->path, sqlite3_errmsg(jr->db));
    return errno_of(rc);
  }
  for (int i = 0; i < S__COUNT; i++) {
    rc = sqlite3_prepare_v3(jr->db, sql[i], -1, SQLITE_PREPARE_PERSISTENT, &jr->st[i], NULL);
    if (rc != SQLITE_OK) {
      snprintf(err, errlen, "journal: %s: %s", jr->path, sqlite3_errmsg(jr->db));
      return errno_of(rc);
    }
  }
  return 0;
}

/* Takes the journal's lock file, so that two servers never write one
 * journal (each would recover the other's running jobs as interrupted). */
static int lock_journal(struct cap_journal *jr, char *err, size_t errlen) {
  char p[4200];
  snprintf(p, sizeof(p), "%s.lock", jr->path);
  jr->lock_fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (jr->lock_fd < 0) {
    int e = errno;
    snprintf(err, errlen, "journal: cannot create %s: %s (set journal_path, or --journal off)", p,
             strerror(e));
    return -e;
  }
  if (flock(jr->lock_fd, LOCK_EX | LOCK_NB) != 0) {
    snprintf(err, errlen, "journal: %s is in use by another cap-server", jr->path);
    return -EBUSY;
  }
  return 0;
}

int cap_journal_open(const char *path, int reset, struct cap_journal **out, char *err,
                     size_t errlen) {
  struct cap_journal *jr = xcalloc(1, sizeof(*jr));
  jr->path = xstrdup(path);
  jr->lock_fd = -1;
  int rc = lock_journal(jr, err, errlen);
  if (rc != 0)
    goto fail;
  if (reset && (rc = move_aside(path, err, errlen)) != 0)
    goto fail;
  /* Made by us first, so that it is private (it holds results and keys):
   * SQLite gives its WAL and shared-memory files the same mode. */
  int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) {
    int e = errno;
    snprintf(err, errlen, "journal: cannot create %s: %s (set journal_path, or --journal off)",
             path, strerror(e));
    rc = -e;
    goto fail;
  }
  close(fd);
  int src = sqlite3_open_v2(path, &jr->db,
                            SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
  if (src != SQLITE_OK) {
    snprintf(err, errlen, "journal: cannot open %s: %s (set journal_path, or --journal off)", path,
             jr->db ? sqlite3_errmsg(jr->db) : "out of memory");
    rc = errno_of(src);
    goto fail;
  }
  sqlite3_busy_timeout(jr->db, BUSY_TIMEOUT_MS);
  if ((rc = check_db(jr, err, errlen)) != 0 || (rc = setup_db(jr, err, errlen)) != 0)
    goto fail;
  jr->stats.size_bytes = total_size(path);
  cap_metrics_set(CAP_M_JOURNAL_BYTES, NULL, (double)jr->stats.size_bytes);
  *out = jr;
  return 0;
fail:
  cap_journal_close(jr);
  return rc;
}

/* Runs on libuv's thread pool: a passive checkpoint on a connection of
 * its own.  Passive means it never takes the writer's lock, so the loop's
 * writes go on meanwhile; the fsyncs of the WAL and the database happen
 * here, never on the loop. */
static void ckpt_work(uv_work_t *w) {
  struct cap_journal *jr = w->data;
  double t0 = mono_s();
  jr->ckpt_rc = sqlite3_wal_checkpoint_v2(jr->ckpt_db, NULL, SQLITE_CHECKPOINT_PASSIVE,
                                          &jr->ckpt_log, &jr->ckpt_done);
  jr->ckpt_s = mono_s() - t0;
}

static void ckpt_after(uv_work_t *w, int status) {
  struct cap_journal *jr = w->data;
  int stopped = jr->ckpt == CKPT_STOPPED;
  if (!stopped)
    jr->ckpt = CKPT_IDLE;
  if (status == 0 && jr->ckpt_rc == SQLITE_OK) {
    jr->stats.checkpoints++;
    struct cap_log_rec *r = cap_log_begin(CAP_LOG_DEBUG, "journal.checkpoint");
    cap_log_int(r, "wal_frames", jr->ckpt_log);
    cap_log_int(r, "copied_frames", jr->ckpt_done);
    cap_log_int(r, "dur_us", (long long)(jr->ckpt_s * 1e6));
    cap_log_end(r);
  } else {
    struct cap_log_rec *r = cap_log_begin(CAP_LOG_WARN, "journal.error");
    cap_log_str(r, "path", jr->path);
    cap_log_str(r, "op", "checkpoint");
    cap_log_str(r, "error", status ? uv_strerror(status) : sqlite3_errstr(jr->ckpt_rc));
    cap_log_end(r);
  }
  jr->stats.size_bytes = total_size(jr->path);
  cap_metrics_set(CAP_M_JOURNAL_BYTES, NULL, (double)jr->stats.size_bytes);
}

static void on_tick(uv_timer_t *t) {
  struct cap_journal *jr = t->data;
  if (jr->ckpt != CKPT_IDLE || jr->dirty_since_ms == 0)
    return;
  int64_t wal = file_size(jr->path, "-wal");
  if (wal < CHECKPOINT_WAL_BYTES && mono_ms() - jr->dirty_since_ms < CHECKPOINT_MAX_AGE_MS)
    return;
  jr->dirty_since_ms = 0;
  jr->work.data = jr;
  if (uv_queue_work(jr->loop, &jr->work, ckpt_work, ckpt_after) == 0)
    jr->ckpt = CKPT_RUNNING;
}

int cap_journal_attach(struct cap_journal *jr, uv_loop_t *loop) {
  jr->loop = loop;
  if (sqlite3_open_v2(jr->path, &jr->ckpt_db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_FULLMUTEX,
                      NULL) != SQLITE_OK)
    return UV_EIO;
  sqlite3_busy_timeout(jr->ckpt_db, 1000);
  /* A connection finds out that the database is in WAL mode only when it
   * first reads it; until then a checkpoint on it does nothing. */
  if (exec_sql(jr->ckpt_db, "PRAGMA journal_mode=WAL") != SQLITE_OK)
    return UV_EIO;
  int rc = uv_timer_init(loop, &jr->timer);
  if (rc != 0)
    return rc;
  jr->timer.data = jr;
  jr->timer_open = 1;
  uv_timer_start(&jr->timer, on_tick, CHECKPOINT_TICK_MS, CHECKPOINT_TICK_MS);
  uv_unref((uv_handle_t *)&jr->timer);
  return 0;
}

void cap_journal_detach(struct cap_journal *jr) {
  if (jr == NULL || !jr->timer_open)
    return;
  jr->timer_open = 0;
  /* A checkpoint under way finishes on its own; its after-callback only
   * counts it. */
  jr->ckpt = jr->ckpt == CKPT_RUNNING ? CKPT_STOPPED : CKPT_IDLE;
  uv_close((uv_handle_t *)&jr->timer, NULL);
}

void cap_journal_close(struct cap_journal *jr) {
  if (jr == NULL)
    return;
  for (int i = 0; i < S__COUNT; i++)
    sqlite3_finalize(jr->st[i]);
  /* A checkpoint under way has ended: the loop that ran it is over. */
  if (jr->ckpt_db)
    sqlite3_close(jr->ckpt_db);
  if (jr->db) {
    /* The last checkpoint folds the WAL in, so that a backup of the
     * database file alone is whole after a clean stop. */
    sqlite3_wal_checkpoint_v2(jr->db, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL);
    sqlite3_close(jr->db);
  }
  if (jr->lock_fd >= 0)
    close(jr->lock_fd);
  free(jr->path);
  free(jr);
}

/* Logs a failed statement, at most once a minute per statement. */
static void log_error(struct cap_journal *jr, enum stmt s, int rc) {
  uint64_t now = mono_ms();
  if (jr->last_error_log_ms[s] && now - jr->last_error_log_ms[s] < ERROR_LOG_EVERY_MS)
    return;
  jr->last_error_log_ms[s] = now;
  struct cap_log_rec *r = cap_log_begin(CAP_LOG_ERROR, "journal.error");
  cap_log_str(r, "path", jr->path);
  cap_log_str(r, "op", sql[s]);
  cap_log_str(r, "error", sqlite3_errmsg(jr->db));
  cap_log_int(r, "sqlite_code", rc);
  cap_log_str(r, "effect", "the server goes on; this change is not on disk");
  cap_log_end(r);
}

/* Runs statement s (its parameters bound) to the end, as one transaction,
 * and keeps the counts.  Returns 0 or a negative errno. */
static int run(struct cap_journal *jr, enum stmt s, double t0) {
  sqlite3_stmt *q = jr->st[s];
  int rc = sqlite3_step(q);
  sqlite3_reset(q);
  sqlite3_clear_bindings(q);
  /* Inside a transaction the commit is the write that counts. */
  if (!jr->in_txn)
    cap_metrics_observe(CAP_M_JOURNAL_WRITE_SECONDS, NULL, mono_s() - t0);
  if (rc != SQLITE_DONE) {
    jr->stats.write_errors++;
    cap_metrics_inc(CAP_M_JOURNAL_WRITES, CAP_LABELS("error"));
    log_error(jr, s, rc);
    return errno_of(rc);
  }
  jr->stats.writes++;
  cap_metrics_inc(CAP_M_JOURNAL_WRITES, CAP_LABELS("ok"));
  if (jr->dirty_since_ms == 0)
    jr->dirty_since_ms = mono_ms();
  return 0;
}

void cap_journal_begin(struct cap_journal *jr) {
  if (jr->in_txn)
    return;
  jr->txn_t0 = mono_s();
  if (exec_sql(jr->db, "BEGIN") == SQLITE_OK)
    jr->in_txn = 1;
}

int cap_journal_commit(struct cap_journal *jr) {
  if (!jr->in_txn)
    return 0;
  jr->in_txn = 0;
  int rc = exec_sql(jr->db, "COMMIT");
  if (rc != SQLITE_OK) {
    /* A commit that failed (disk full) leaves the transaction open. */
    exec_sql(jr->db, "ROLLBACK");
    jr->stats.write_errors++;
    cap_metrics_inc(CAP_M_JOURNAL_WRITES, CAP_LABELS("error"));
    log_error(jr, S_JOB_PUT, rc);
    return errno_of(rc);
  }
  cap_metrics_observe(CAP_M_JOURNAL_WRITE_SECONDS, NULL, mono_s() - jr->txn_t0);
  return 0;
}

static void bind_text(sqlite3_stmt *q, int i, const char *s) {
  if (s)
    sqlite3_bind_text(q, i, s, -1, SQLITE_STATIC);
  else
    sqlite3_bind_null(q, i);
}

static void bind_time(sqlite3_stmt *q, int i, int64_t v) {
  if (v > 0)
    sqlite3_bind_int64(q, i, v);
  else
    sqlite3_bind_null(q, i);
}

int cap_journal_job_put(struct cap_journal *jr, const struct cap_journal_job *j) {
  double t0 = mono_s();
  sqlite3_stmt *q = jr->st[S_JOB_PUT];
  bind_text(q, 1, j->id);
  bind_text(q, 2, j->owner ? j->owner : "");
  bind_text(q, 3, j->req_id);
  bind_text(q, 4, j->capability);
  bind_text(q, 5, j->preset);
  bind_text(q, 6, j->idem_key);
  if (j->body_hash)
    sqlite3_bind_blob(q, 7, j->body_hash, 32, SQLITE_STATIC);
  bind_text(q, 8, j->state);
  bind_text(q, 9, j->code);
  sqlite3_bind_int64(q, 10, j->created_at);
  bind_time(q, 11, j->started_at);
  bind_time(q, 12, j->finished_at);
  bind_text(q, 13, j->input_key);
  bind_text(q, 14, j->output_key);
  bind_text(q, 15, j->output_prefix);
  bind_text(q, 16, j->upload_id);
  bind_text(q, 17, j->callback_url);
  bind_text(q, 18, j->callback_events);
  bind_text(q, 19, j->job_json);
  bind_text(q, 20, j->answer_json);
  return run(jr, S_JOB_PUT, t0);
}

static int run_one_text(struct cap_journal *jr, enum stmt s, const char *a, const char *b) {
  double t0 = mono_s();
  bind_text(jr->st[s], 1, a);
  if (b)
    bind_text(jr->st[s], 2, b);
  return run(jr, s, t0);
}

int cap_journal_object_add(struct cap_journal *jr, const char *job_id, const char *key) {
  return run_one_text(jr, S_OBJ_ADD, job_id, key);
}

int cap_journal_object_clear(struct cap_journal *jr, const char *job_id) {
  return run_one_text(jr, S_OBJ_CLEAR, job_id, NULL);
}

int cap_journal_job_delete(struct cap_journal *jr, const char *id) {
  int rc = run_one_text(jr, S_JOB_DELETE, id, NULL);
  if (rc == 0)
    rc = run_one_text(jr, S_OBJ_CLEAR, id, NULL);
  return rc;
}

int cap_journal_job_purge(struct cap_journal *jr, int64_t cutoff_ms) {
  double t0 = mono_s();
  sqlite3_bind_int64(jr->st[S_JOB_PURGE], 1, cutoff_ms);
  int rc = run(jr, S_JOB_PURGE, t0);
  if (rc == 0 && sqlite3_changes(jr->db) > 0)
    rc = run(jr, S_OBJ_PURGE, mono_s());
  return rc;
}

static const char *col_text(sqlite3_stmt *q, int i) {
  return (const char *)sqlite3_column_text(q, i);
}

/* Steps a loading query to its end; returns 0 or a negative errno. */
static int finish_load(struct cap_journal *jr, sqlite3_stmt *q, int rc) {
  sqlite3_reset(q);
  sqlite3_clear_bindings(q);
  if (rc == SQLITE_DONE)
    return 0;
  struct cap_log_rec *r = cap_log_begin(CAP_LOG_ERROR, "journal.error");
  cap_log_str(r, "path", jr->path);
  cap_log_str(r, "op", "load");
  cap_log_str(r, "error", sqlite3_errmsg(jr->db));
  cap_log_end(r);
  return errno_of(rc);
}

int cap_journal_job_load(struct cap_journal *jr,
                         void (*cb)(void *arg, const struct cap_journal_job *row), void *arg) {
  sqlite3_stmt *q = jr->st[S_JOB_LOAD];
  int rc;
  while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
    struct cap_journal_job j = {
        .id = col_text(q, 0),
        .owner = col_text(q, 1),
        .req_id = col_text(q, 2),
        .capability = col_text(q, 3),
        .preset = col_text(q, 4),
        .idem_key = col_text(q, 5),
        .state = col_text(q, 7),
        .code = col_text(q, 8),
        .created_at = sqlite3_column_int64(q, 9),
        .started_at = sqlite3_column_int64(q, 10),
        .finished_at = sqlite3_column_int64(q, 11),
        .input_key = col_text(q, 12),
        .output_key = col_text(q, 13),
        .output_prefix = col_text(q, 14),
        .upload_id = col_text(q, 15),
        .callback_url = col_text(q, 16),
        .callback_events = col_text(q, 17),
        .job_json = col_text(q, 18),
        .answer_json = col_text(q, 19),
    };
    if (sqlite3_column_bytes(q, 6) == 32)
      j.body_hash = sqlite3_column_blob(q, 6);
    if (j.id == NULL || j.state == NULL)
      continue;
    cb(arg, &j);
  }
  return finish_load(jr, q, rc);
}

int cap_journal_object_load(struct cap_journal *jr, const char *job_id,
                            void (*cb)(void *arg, const char *key), void *arg) {
  sqlite3_stmt *q = jr->st[S_OBJ_LOAD];
  bind_text(q, 1, job_id);
  int rc;
  while ((rc = sqlite3_step(q)) == SQLITE_ROW)
    if (col_text(q, 0))
      cb(arg, col_text(q, 0));
  return finish_load(jr, q, rc);
}

int cap_journal_event_add(struct cap_journal *jr, const struct cap_journal_event *e) {
  double t0 = mono_s();
  sqlite3_stmt *q = jr->st[S_EV_ADD];
  bind_text(q, 1, e->id);
  bind_text(q, 2, e->job_id);
  bind_text(q, 3, e->owner ? e->owner : "");
  bind_text(q, 4, e->url);
  bind_text(q, 5, e->type);
  bind_text(q, 6, e->body);
  sqlite3_bind_int(q, 7, e->attempts);
  sqlite3_bind_int64(q, 8, e->created_at);
  sqlite3_bind_int64(q, 9, e->next_at);
  return run(jr, S_EV_ADD, t0);
}

int cap_journal_event_update(struct cap_journal *jr, const char *id, int attempts,
                             int64_t next_at) {
  double t0 = mono_s();
  sqlite3_stmt *q = jr->st[S_EV_UPDATE];
  bind_text(q, 1, id);
  sqlite3_bind_int(q, 2, attempts);
  sqlite3_bind_int64(q, 3, next_at);
  return run(jr, S_EV_UPDATE, t0);
}

int cap_journal_event_delete(struct cap_journal *jr, const char *id) {
  return run_one_text(jr, S_EV_DELETE, id, NULL);
}

int cap_journal_event_load(struct cap_journal *jr,
                           void (*cb)(void *arg, const struct cap_journal_event *e), void *arg) {
  sqlite3_stmt *q = jr->st[S_EV_LOAD];
  int rc;
  while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
    struct cap_journal_event e = {
        .id = col_text(q, 0),
        .job_id = col_text(q, 1),
        .owner = col_text(q, 2),
        .url = col_text(q, 3),
        .type = col_text(q, 4),
        .body = col_text(q, 5),
        .attempts = sqlite3_column_int(q, 6),
        .created_at = sqlite3_column_int64(q, 7),
        .next_at = sqlite3_column_int64(q, 8),
    };
    if (e.id && e.url && e.type && e.body)
      cb(arg, &e);
  }
  return finish_load(jr, q, rc);
}

static int64_t count_of(struct cap_journal *jr, const char *q) {
  sqlite3_stmt *s = NULL;
  int64_t n = -1;
  if (sqlite3_prepare_v2(jr->db, q, -1, &s, NULL) == SQLITE_OK && sqlite3_step(s) == SQLITE_ROW)
    n = sqlite3_column_int64(s, 0);
  sqlite3_finalize(s);
  return n;
}

void cap_journal_counts(struct cap_journal *jr, int64_t *jobs, int64_t *events) {
  *jobs = count_of(jr, "SELECT count(*) FROM jobs");
  *events = count_of(jr, "SELECT count(*) FROM outbox");
}

void cap_journal_stats(const struct cap_journal *jr, struct cap_journal_stats *out) {
  *out = jr->stats;
}

const char *cap_journal_path(const struct cap_journal *jr) {
  return jr->path;
}
