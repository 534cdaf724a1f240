# tests/fuzz: included by Makefile.am
# --- fuzzing (clang's libFuzzer; not part of make check) -------------------
EXTRA_DIST += tests/fuzz/fuzz-http.c tests/fuzz/corpus
fuzz-http: $(top_srcdir)/tests/fuzz/fuzz-http.c $(top_srcdir)/src/bridge/http.c $(top_srcdir)/src/core/util.c
	clang -g -O1 -fsanitize=fuzzer,address,undefined -std=gnu11 -D_GNU_SOURCE \
	  -I$(top_srcdir)/src/core -I$(top_srcdir)/src/bridge $(UV_CFLAGS) $(OPENSSL_CFLAGS) \
	  -o $@ $(top_srcdir)/tests/fuzz/fuzz-http.c $(top_srcdir)/src/bridge/http.c \
	  $(top_srcdir)/src/core/util.c $(UV_LIBS) $(OPENSSL_LIBS) $(HTTP_PARSER_LIBS) $(WSLAY_LIBS) -lm
CLEANFILES = fuzz-http
