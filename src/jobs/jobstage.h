#ifndef CAP_JOBSTAGE_H
#define CAP_JOBSTAGE_H

/* A job's stages, what clients see of each, and the moves allowed between
 * them: data, kept apart from the code that moves a job (job.c). */

/* What API clients see of a job (GET /jobs/{id}, the cap_jobs gauge). */
enum cap_job_state {
  CAP_JOB_QUEUED,
  CAP_JOB_RUNNING,
  CAP_JOB_UPLOADING,
  CAP_JOB_SUCCEEDED,
  CAP_JOB_FAILED,
  CAP_JOB_CANCELED,
};

/* A job's life, finer than what clients see.  Only move() in job.c
 * changes a job's stage, and only along these arrows (the table
 * cap_jobstage_may_move reads):
 *
 *   NEW -> QUEUED -+-(S3)--> FETCHING -+-> PROBING ---------------------------> SUCCEEDED
 *                  +-(file store)------+     `-refused-> DETECTING                  ^
 *                  |                   `-> MEASURING -> RENDERING -> STORING -------'
 *                  |                          `-refused-> DETECTING
 *   QUEUED ... STORING --error, timeout--> FAILED
 *   QUEUED ... STORING --cancel----------> CANCELED
 *   SUCCEEDED, FAILED, CANCELED --child reaped, storage done, timer closed--> CLOSED
 *
 *   stage      public      what is going on
 *   NEW        queued      made, not yet in the table
 *   QUEUED     queued      in its class's queue
 *   FETCHING   running     holds a slot; the input downloads from S3/R2
 *   PROBING    running     ffprobe runs (an ffprobe job)
 *   MEASURING  running     ffprobe measures the input's duration before a render
 *   DETECTING  running     ffprobe names the format the allow-list refused
 *   RENDERING  running     ffmpeg runs (its output may be streaming to S3)
 *   STORING    uploading   ffmpeg exited 0; the output is being stored
 *   SUCCEEDED, FAILED, CANCELED: the outcome; a killed child may still be
 *              exiting and an upload aborting
 *   CLOSED     (outcome)   no child, no storage request, no slot, no open
 *              handle: the table may free it */
enum cap_job_stage {
  CAP_JOB_S_NEW,
  CAP_JOB_S_QUEUED,
  CAP_JOB_S_FETCHING,
  CAP_JOB_S_PROBING,
  CAP_JOB_S_MEASURING,
  CAP_JOB_S_DETECTING,
  CAP_JOB_S_RENDERING,
  CAP_JOB_S_STORING,
  CAP_JOB_S_SUCCEEDED,
  CAP_JOB_S_FAILED,
  CAP_JOB_S_CANCELED,
  CAP_JOB_S_CLOSED,
  CAP_JOB_S__COUNT
};

/* Returns the public name of s ("queued", ...), a static string. */
const char *cap_jobstage_state_name(enum cap_job_state s);
/* Returns the name of stage s ("rendering", ...), as job.state logs it; a
 * static string. */
const char *cap_jobstage_name(enum cap_job_stage s);
/* Returns what clients see of stage s, or -1 for CLOSED, which keeps the
 * outcome the job already shows. */
int cap_jobstage_public(enum cap_job_stage s);
/* Returns 1 when a job may move from stage from to stage to, else 0. */
int cap_jobstage_may_move(enum cap_job_stage from, enum cap_job_stage to);

#endif
