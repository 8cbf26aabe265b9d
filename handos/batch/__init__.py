"""Batched runs over many images: the streaming runner (`runner`) and Ray Data (`ray`, extra `handos[ray]`)."""
