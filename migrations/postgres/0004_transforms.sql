-- Variations beyond the 2x upscale: background removal, unzoom and the universal upscaler.
-- `settings` holds a transform's parameters (JSON; the universal upscaler's multiplier and
-- styles); `source_key` the file to transform when it is an earlier variation's result rather
-- than the image's own.
ALTER TABLE variations ADD COLUMN settings TEXT;
ALTER TABLE variations ADD COLUMN source_key TEXT;
