# extensions/discord: included by Makefile.am
