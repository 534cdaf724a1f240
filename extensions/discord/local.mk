# extensions/discord: included by Makefile.am
extensions_LTLIBRARIES += extensions/discord/discord.la
extensions_discord_discord_la_SOURCES = extensions/discord/discord.c
extensions_discord_discord_la_LDFLAGS = $(AM_LDFLAGS) -module -avoid-version -shared
extensions_discord_discord_la_LIBADD = $(JANSSON_LIBS) -lm
EXTRA_DIST += extensions/discord/README tests/helpers/discord_stub.py
INTEGRATION_TESTS += tests/integration/discord.sh
dist_man_MANS += man/dreamos-discord.7
