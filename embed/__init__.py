"""``dd embed``: sentence vectors from a (tuned) BERT, the meme picture, a score, a service.

The study's last step ran bert-as-service on top of the tuned checkpoint; this
package replaces it on current Keras/TensorFlow. The model comes from the one
loading path ``pretrain.loading.load_bert``; everything here only tokenizes,
runs the backbone's own layers and pools (``pooling.py``), with the picture,
neighbours, score and HTTP service on top.
"""
