"""The static files' storage: WhiteNoise's compressed, content-hashed files, with the ES
module imports between them rewritten to the hashed names too (Django leaves them alone by
default, and a module would then import an unhashed file the browser caches only briefly)."""

from whitenoise.storage import CompressedManifestStaticFilesStorage


class HashedStaticStorage(CompressedManifestStaticFilesStorage):
    support_js_module_import_aggregation = True
