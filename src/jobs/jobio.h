#ifndef CAP_JOBIO_H
#define CAP_JOBIO_H

#include <stdint.h>

struct cap_job;

/* A job's traffic with S3/R2: the input downloaded into a private temp
 * file, and the output streamed from ffmpeg's stdout (or uploaded from a
 * temp file for outputs that need seeking) in uniform parts.  Results come
 * back through cap_job_input_ready and cap_job_output_done. */

/* Downloads the job's input into a temp file (mode 0600) under the store's
 * temp directory. */
void cap_jobio_fetch(struct cap_job *j);
/* Starts uploading what ffmpeg writes to its stdout (spawned with stream_out). */
void cap_jobio_stream(struct cap_job *j);
/* ffmpeg exited 0 after a streamed output: send the rest and complete. */
void cap_jobio_finish(struct cap_job *j);
/* Uploads size bytes of the finished output in fd (kept open by the job). */
void cap_jobio_upload_file(struct cap_job *j, int fd, uint64_t size);
/* Stops the job's storage traffic: the download is dropped, ffmpeg's pipe
 * closed and the multipart upload aborted (cap_job_output_done follows). */
void cap_jobio_abort(struct cap_job *j, const char *code, const char *msg);
/* Releases the upload after the job has ended. */
void cap_jobio_free(struct cap_job *j);

#endif
