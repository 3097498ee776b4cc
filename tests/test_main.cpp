// tests/test_main.cpp — doctest's main for the gdn_tests binary. Test files are tests/test_*.cpp.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
