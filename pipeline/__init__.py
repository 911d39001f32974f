"""The archive pipeline on Ray Data (sources, codec actors, Parquet sinks): a thin layer over `codec`.

Its jobs (`tng compress`, `tng decompress`, `tng audit`) are tracked in issue 4; the codec API they
build on is `codec.Codec` (encode / decode) with `codec.open_image` for inputs.
"""
