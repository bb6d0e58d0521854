#include "txbox/relay/cli.hpp"

int main(int argc, char** argv) { return txbox::relay::relay_main(argc, argv); }
