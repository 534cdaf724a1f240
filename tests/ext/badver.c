/* badver.c — test objects the loader must refuse: built for another API
 * version (badver.so), or not an extension at all (notext.so, with
 * NOT_AN_EXTENSION: no dreamos_extension_api symbol). */
#include <stddef.h>

#include <dreamos/extension.h>

#ifdef NOT_AN_EXTENSION

int notext_answer(void);
int
notext_answer(void)
{
	return 42;
}

#else

static int
init(struct dreamos_ext *ext, const struct dreamos_host *host, const char *config)
{
	(void)ext;
	(void)host;
	(void)config;
	return 0;
}

/* What DREAMOS_EXTENSION would give, with an old API version. */
DREAMOS_EXPORT extern const char dreamos_extension_api[];
DREAMOS_EXPORT const char dreamos_extension_api[] = "19700101-01";
DREAMOS_EXPORT extern const struct dreamos_ext_info dreamos_extension;
DREAMOS_EXPORT const struct dreamos_ext_info dreamos_extension = {
    .api_version = "19700101-01",
    .size = sizeof(struct dreamos_ext_info),
    .name = "badver",
    .version = "1.0",
    .init = init,
};

#endif
