"""Offline datasets: Fashion-MNIST, natural photos, Shakespeare text, and user image folders."""
from squeeze.data.fashion_mnist import FMNIST_MEAN, FMNIST_STD, load_fashion_mnist

__all__ = ["FMNIST_MEAN", "FMNIST_STD", "load_fashion_mnist"]
