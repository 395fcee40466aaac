// host: the program exeforge/forge.c is preloaded into. It does nothing of
// its own (and refers to no libc data, which the attack's unmapping of this
// program would take away): the library's constructor runs, then exits.
#include <unistd.h>

int main(void) {
	for (;;)
		pause();
}
