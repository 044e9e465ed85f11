"""Chollet, *Deep Learning with Python* (1st ed.), §6.2: stacked SimpleRNNs on IMDB.

The book's stack of recurrent layers (``return_sequences=True`` on all but the last), trained like
listing 6.23, as Keras 3 code run by fastrnn: only the import lines differ from the Keras twin
below (``tests/test_examples.py`` checks it). Keras 3 builds a model and prints its summary once
it knows the input shape, hence the ``Input``. The same two additions to the book as
``chollet_simple_rnn.py``: ``EarlyStopping(restore_best_weights=True)`` with a patience longer than
the run (it ends the run with the best validation epoch's weights) and the test accuracy. Needs
``imdb.npz`` in ``$FASTRNN_DATA_DIR`` (or it is downloaded)::

    FASTRNN_DATA_DIR=/path/to/imdb python examples/chollet_stacked_simple_rnn.py

The Keras 3 twin (``KERAS_BACKEND=jax python twin.py``)::

    from keras.datasets import imdb
    from keras.preprocessing import sequence
    from keras.models import Sequential
    from keras.layers import Input, Embedding, SimpleRNN, Dense
    from keras.callbacks import EarlyStopping
    from keras import utils

    utils.set_random_seed(0)  # the same run every time (Keras 3: keras.utils.set_random_seed)
    max_features = 10000  # number of words to consider as features
    maxlen = 500  # cut texts after this number of words (among top max_features most common words)
    batch_size = 32

    print('Loading data...')
    (input_train, y_train), (input_test, y_test) = imdb.load_data(num_words=max_features)
    print(len(input_train), 'train sequences')
    print(len(input_test), 'test sequences')

    print('Pad sequences (samples x time)')
    input_train = sequence.pad_sequences(input_train, maxlen=maxlen)
    input_test = sequence.pad_sequences(input_test, maxlen=maxlen)
    print('input_train shape:', input_train.shape)
    print('input_test shape:', input_test.shape)

    model = Sequential()
    model.add(Input(shape=(maxlen,)))
    model.add(Embedding(max_features, 32))
    model.add(SimpleRNN(32, return_sequences=True))
    model.add(SimpleRNN(32, return_sequences=True))
    model.add(SimpleRNN(32, return_sequences=True))
    model.add(SimpleRNN(32))  # This last layer only returns the last outputs.
    model.add(Dense(1, activation='sigmoid'))
    model.summary()

    model.compile(optimizer='rmsprop', loss='binary_crossentropy', metrics=['acc'])
    best = EarlyStopping(monitor='val_acc', patience=10, restore_best_weights=True)
    history = model.fit(input_train, y_train,
                        epochs=10,
                        batch_size=128,
                        validation_split=0.2,
                        callbacks=[best])

    test_loss, test_acc = model.evaluate(input_test, y_test)
    print('best epoch:', best.best_epoch + 1, 'val_acc:', max(history.history['val_acc']))
    print('test accuracy:', test_acc)
"""

from fastrnn.datasets import imdb
from fastrnn.preprocessing import sequence
from fastrnn.models import Sequential
from fastrnn.layers import Input, Embedding, SimpleRNN, Dense
from fastrnn.callbacks import EarlyStopping
from fastrnn import utils

utils.set_random_seed(0)  # the same run every time (Keras 3: keras.utils.set_random_seed)
max_features = 10000  # number of words to consider as features
maxlen = 500  # cut texts after this number of words (among top max_features most common words)
batch_size = 32

print('Loading data...')
(input_train, y_train), (input_test, y_test) = imdb.load_data(num_words=max_features)
print(len(input_train), 'train sequences')
print(len(input_test), 'test sequences')

print('Pad sequences (samples x time)')
input_train = sequence.pad_sequences(input_train, maxlen=maxlen)
input_test = sequence.pad_sequences(input_test, maxlen=maxlen)
print('input_train shape:', input_train.shape)
print('input_test shape:', input_test.shape)

model = Sequential()
model.add(Input(shape=(maxlen,)))
model.add(Embedding(max_features, 32))
model.add(SimpleRNN(32, return_sequences=True))
model.add(SimpleRNN(32, return_sequences=True))
model.add(SimpleRNN(32, return_sequences=True))
model.add(SimpleRNN(32))  # This last layer only returns the last outputs.
model.add(Dense(1, activation='sigmoid'))
model.summary()

model.compile(optimizer='rmsprop', loss='binary_crossentropy', metrics=['acc'])
best = EarlyStopping(monitor='val_acc', patience=10, restore_best_weights=True)
history = model.fit(input_train, y_train,
                    epochs=10,
                    batch_size=128,
                    validation_split=0.2,
                    callbacks=[best])

test_loss, test_acc = model.evaluate(input_test, y_test)
print('best epoch:', best.best_epoch + 1, 'val_acc:', max(history.history['val_acc']))
print('test accuracy:', test_acc)
