# extensions/stealthbrowser: included by Makefile.am
