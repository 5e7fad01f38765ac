#ifndef CAP_CONTAINER_H
#define CAP_CONTAINER_H

#include <stddef.h>

/* From a pointer to a member embedded in a struct, the struct itself: the
 * way a libuv callback that receives a handle reaches the handle's owner. */
#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

#endif
