#include "txbox/relay/cli.hpp"

int main(int argc, char** argv) { return txbox::relay::txbox_main(argc, argv); }
