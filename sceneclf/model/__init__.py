"""The model stage: front end (`frontend`), CNN (`cnn`), what it costs (`budget`) and its
checkpoint file (`checkpoint`). Pure torch; the shape limits below are light to import."""

KERNEL_SIZES = (1, 3, 5, 7)
MAX_BLOCKS = 6
PRECISIONS = ("fp32", "fp16", "int8")  # what a model may ship in
