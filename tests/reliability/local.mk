# tests/reliability: included by Makefile.am
