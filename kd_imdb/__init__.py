"""kd_imdb: knowledge distillation of a transformer teacher into tiny GRU/CNN students on IMDB."""

__version__ = "0.1.0"
