/* fuzz-config.c — a libFuzzer target for the YAML configuration loader
 * (config.c): libyaml's parser, the schema table, every key's validation,
 * defaults, the agents list, extension settings converted to JSON (with
 * aliases), then the effective configuration as JSON and agent_cfg copies.
 *
 * Input: YAML text, at most 64 KiB (a configuration is a small file; the
 * bound keeps the fuzzer fast).  config_load_string takes a NUL-terminated
 * string, so the input is cut at its first NUL.
 * Checks: a failure has a cause naming the file; a success gives
 * a configuration that converts to a JSON object; nothing leaks. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz-check.h"
#include "config.h"

#define CONFIG_MAX_INPUT (64 * 1024)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > CONFIG_MAX_INPUT)
		return 0;
	char *text = malloc(size + 1);
	memcpy(text, data, size);
	text[size] = '\0';
	struct config *cfg = NULL;
	char *cause = NULL;
	if (config_load_string(text, "fuzz.yaml", &cfg, &cause) != 0) {
		/* One line naming the file, whatever the keys hold. */
		FUZZ_CHECK(cause != NULL && strncmp(cause, "fuzz.yaml:", 10) == 0);
		FUZZ_CHECK(strchr(cause, '\n') == NULL);
		FUZZ_CHECK(cfg == NULL);
		free(cause);
		free(text);
		return 0;
	}
	FUZZ_CHECK(!(cfg == NULL || cause != NULL));
	json_t *j = config_to_json(cfg);
	FUZZ_CHECK(json_is_object(j));
	char *s = json_dumps(j, JSON_COMPACT);
	FUZZ_CHECK(s != NULL);
	free(s);
	json_decref(j);
	for (size_t i = 0; i < cfg->agents.n; i++) {
		struct agent_cfg copy;
		agent_cfg_copy(&copy, &cfg->agents.list[i]);
		FUZZ_CHECK(
		    !(copy.name == NULL || strcmp(copy.name, cfg->agents.list[i].name) != 0));
		agent_cfg_clear(&copy);
	}
	struct agent_cfg fresh;
	agent_cfg_init(&fresh, cfg);
	agent_cfg_clear(&fresh);
	config_free(cfg);
	free(text);
	return 0;
}
