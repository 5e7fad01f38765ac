#include "jobstage.h"

static const char *const state_names[] = {"queued",    "running", "uploading",
                                          "succeeded", "failed",  "canceled"};

const char *cap_jobstage_state_name(enum cap_job_state s) {
  return state_names[s];
}

/* The stage table: each stage's name, what clients see of it (-1: CLOSED
 * keeps the outcome), and the stages it may move to. */
#define TO(s)    (1u << CAP_JOB_S_##s)
#define ENDINGS  (TO(FAILED) | TO(CANCELED))
#define KEEP_OUT -1
static const struct {
  const char *name;
  int state;
  unsigned next;
} stages[CAP_JOB_S__COUNT] = {
    [CAP_JOB_S_NEW] = {"new", CAP_JOB_QUEUED, TO(QUEUED)},
    [CAP_JOB_S_QUEUED] = {"queued", CAP_JOB_QUEUED,
                          TO(FETCHING) | TO(PROBING) | TO(MEASURING) | ENDINGS},
    [CAP_JOB_S_FETCHING] = {"fetching", CAP_JOB_RUNNING, TO(PROBING) | TO(MEASURING) | ENDINGS},
    [CAP_JOB_S_PROBING] = {"probing", CAP_JOB_RUNNING, TO(DETECTING) | TO(SUCCEEDED) | ENDINGS},
    [CAP_JOB_S_MEASURING] = {"measuring", CAP_JOB_RUNNING, TO(DETECTING) | TO(RENDERING) | ENDINGS},
    [CAP_JOB_S_DETECTING] = {"detecting", CAP_JOB_RUNNING, ENDINGS},
    [CAP_JOB_S_RENDERING] = {"rendering", CAP_JOB_RUNNING, TO(STORING) | ENDINGS},
    [CAP_JOB_S_STORING] = {"storing", CAP_JOB_UPLOADING, TO(SUCCEEDED) | ENDINGS},
    [CAP_JOB_S_SUCCEEDED] = {"succeeded", CAP_JOB_SUCCEEDED, TO(CLOSED)},
    [CAP_JOB_S_FAILED] = {"failed", CAP_JOB_FAILED, TO(CLOSED)},
    [CAP_JOB_S_CANCELED] = {"canceled", CAP_JOB_CANCELED, TO(CLOSED)},
    [CAP_JOB_S_CLOSED] = {"closed", KEEP_OUT, 0},
};

const char *cap_jobstage_name(enum cap_job_stage s) {
  return stages[s].name;
}

int cap_jobstage_may_move(enum cap_job_stage from, enum cap_job_stage to) {
  return from < CAP_JOB_S__COUNT && to < CAP_JOB_S__COUNT && (stages[from].next & (1u << to)) != 0;
}

int cap_jobstage_public(enum cap_job_stage s) {
  return stages[s].state;
}
