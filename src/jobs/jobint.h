#ifndef CAP_JOBINT_H
#define CAP_JOBINT_H

/* What job.c (one job's life) lends jobladder.c (a ladder job's own
 * steps), and the steps it calls back.  Nothing else includes this. */

#include "errcode.h"
#include "jobcmd.h"
#include "jobstage.h"

#include <stddef.h>

struct cap_job;
struct cap_proc;

/* job.c: the one place a job changes stage (checked and logged). */
void cap_jobint_move(struct cap_job *j, enum cap_job_stage to);
/* Gives the job its outcome (the first stands); a ladder not finished is
 * told to take back what it stored. */
void cap_jobint_settle(struct cap_job *j, enum cap_job_stage outcome, enum cap_err err,
                       const char *msg);
void cap_jobint_fail(struct cap_job *j, enum cap_err err, const char *msg);
/* SIGKILL to the child's process group, when it runs. */
void cap_jobint_kill_child(struct cap_job *j);
/* Starts the child of the job's current stage (0 or a UV_E* code). */
int cap_jobint_spawn(struct cap_job *j, char **argv, size_t capture, int progress, int stream);
/* What the job's command lines are built from. */
struct cap_jobcmd cap_jobint_cmd(const struct cap_job *j);

/* jobladder.c: reads the streams probe (size, rotation, audio), or fails
 * the job when there is no video. */
void cap_jobladder_measured(struct cap_job *j, const struct cap_proc *p);
/* Makes the package's directories and watches, and starts the ladder's
 * ffmpeg (RENDERING); fails the job when it cannot. */
void cap_jobladder_start(struct cap_job *j);

#endif
