"""Evaluation: how TNG is measured against other codecs, shared by `tng report` and `bench/`.

Kept out of `codec/` because it serves reports and benchmarks, not coding: it imports `codec`,
never the other way round (tests/test_layout.py checks).

Used by `bench/rd.py` (the codec benchmark) and `tng report --source` (an archive's RD study), so
both measure the same way:

* Every codec gets the same 8-bit RGB pixels. Rate is bits per pixel of the complete file each
  codec writes (TNG: the whole .tng bitstream, container included).
* TNG is decoded again from its stream (`Codec.decode`); Pillow files are decoded with Pillow,
  JPEG XL files with libjxl.
* JPEG: libjpeg(-turbo), 4:2:0, optimize=True (optimised Huffman tables, lossless and free).
  WebP: method 4. AVIF (where Pillow has it): libavif, speed 6, 4:4:4. JPEG XL (libjxl through
  imagecodecs): effort 7, swept over distances 0.5–25 (25, libjxl's largest, is its lowest rate).
* PSNR on the decoded 8-bit RGB against the source, the three channels' MSE pooled; MS-SSIM as in
  `codec.metrics.ms_ssim`. Across images: mean bpp, mean of per-image dB, mean MS-SSIM per setting.
* BD-rates (`evaluation.bdrate`: PCHIP, exact integration) between mean curves clipped to 0.1–1.5 bpp.

Modules, in the order data flows through them:

* `measure`: runs each codec on one image and gives its points (`sweep`).
* `curves`: means over images, BD results between codecs, the setting or rate for a target PSNR.
* `bdrate`: the Bjøntegaard math (PCHIP, numpy only).
* `plots`: RD curves and histograms as PNG bytes (matplotlib).
"""
