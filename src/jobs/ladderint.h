#ifndef CAP_LADDERINT_H
#define CAP_LADDERINT_H

/* What ladder.c (the package while ffmpeg writes it: watches, uploads,
 * the backlog, the state) and ladderend.c (its end: the playlists and the
 * master after ffmpeg's exit, or the deletion after a failure) share.
 * Nothing outside those two includes this. */

#include "buf.h"

#include <stdint.h>

struct cap_ladder;
struct cap_ladder_rend;
struct cap_ladder_slot;

enum file_kind { F_MAP, F_SEG, F_PLAYLIST, F_MASTER };

/* A finished file waiting to be stored. */
struct cap_ladder_file {
  struct cap_ladder_file *next;
  struct cap_ladder_rend *r; /* NULL for the master. */
  enum file_kind kind;
  char local[96];  /* Under the job's temp directory. */
  char keyrel[96]; /* Under the output prefix. */
  uint64_t size;
  double duration;
};

/* Queues the finished file local (under the job's temp directory) to be
 * stored as keyrel under the prefix; segments and init segments count in
 * the backlog.  Fails the ladder when the file has gone. */
void cap_ladderint_enqueue(struct cap_ladder *l, struct cap_ladder_rend *r, enum file_kind kind,
                           const char *local, const char *keyrel, double duration);
/* Reads temp file name (under the job's directory) whole into b, at most
 * a playlist's worth.  Returns 0 or a negative errno. */
int cap_ladderint_read(struct cap_ladder *l, const char *name, struct cap_buf *b);
/* Returns prefix + rel, which the caller frees. */
char *cap_ladderint_key(const struct cap_ladder *l, const char *rel);
/* Returns a slot with nothing under way, or NULL. */
struct cap_ladder_slot *cap_ladderint_free_slot(struct cap_ladder *l);
/* Runs the ladder's next step on a later loop turn. */
void cap_ladderint_schedule(struct cap_ladder *l);

/* ladderend.c: stops the deletes under way and counts them, and the keys
 * not yet deleted, in delete_failures; the cleanup is over. */
void cap_ladderint_give_up(struct cap_ladder *l);
/* ladderend.c: queues each media playlist, marked VOD (0 or -errno). */
int cap_ladderint_queue_playlists(struct cap_ladder *l);
/* Writes the master and queues it (0 or -errno). */
int cap_ladderint_queue_master(struct cap_ladder *l);
/* Starts deletes of what may have been stored, while slots are free; sets
 * l->cleaned once every one has ended. */
void cap_ladderint_pump_deletes(struct cap_ladder *l);

#endif
