"""Offline datasets: Fashion-MNIST, natural photos, Shakespeare text, and user image folders."""
from squeeze.data.fashion_mnist import FMNIST_MEAN, FMNIST_STD, load_fashion_mnist

__all__ = ["FMNIST_MEAN", "FMNIST_STD", "load_fashion_mnist"]
from squeeze.data.folder import ImageFolderData, eval_transform  # noqa: E402
from squeeze.data.photos import PhotoRef, list_photos, load_photo, photo_crops, photo_split  # noqa: E402
from squeeze.data.text import load_shakespeare, sample_passages  # noqa: E402

__all__ += ["ImageFolderData", "PhotoRef", "eval_transform", "list_photos", "load_photo", "load_shakespeare",
            "photo_crops", "photo_split", "sample_passages"]
