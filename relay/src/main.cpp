#include <malloc.h>

#include <csignal>

#include "txbox/relay/cli.hpp"

int main(int argc, char** argv) {
  // Large payload buffers (above 1 MiB) are mapped and unmapped on their
  // own, so their memory goes back to the system as soon as a batch is done
  // (glibc would otherwise raise this threshold as it goes and keep them).
  mallopt(M_MMAP_THRESHOLD, 1 << 20);
  // A broker connection that died under a write must fail that write, not
  // kill the process (not every client library blocks SIGPIPE itself).
  std::signal(SIGPIPE, SIG_IGN);
  return txbox::relay::relay_main(argc, argv);
}
