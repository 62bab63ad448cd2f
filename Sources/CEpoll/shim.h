// Linux epoll(7) for the HTTP server's event loop (Glibc's Swift module does not export it).
#include <sys/epoll.h>
