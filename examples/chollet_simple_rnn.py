"""Chollet, *Deep Learning with Python* (1st ed.), §6.2, listings 6.22-6.23: a SimpleRNN on IMDB.

The listings as Keras 3 code, run by fastrnn: only the import lines differ from the Keras twin
below (``tests/test_examples.py`` checks it). Two additions to the book, the same in both: an
``EarlyStopping(restore_best_weights=True)`` with a patience longer than the run, which never stops
it but ends it with the weights of the epoch with the best validation accuracy, and the test
accuracy of those weights. Needs ``imdb.npz`` in ``$FASTRNN_DATA_DIR`` (or it is downloaded)::

    FASTRNN_DATA_DIR=/path/to/imdb python examples/chollet_simple_rnn.py

The Keras 3 twin (``KERAS_BACKEND=jax python twin.py``)::

    from keras.datasets import imdb
    from keras.preprocessing import sequence
    from keras.models import Sequential
    from keras.layers import Embedding, SimpleRNN, Dense
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
    model.add(Embedding(max_features, 32))
    model.add(SimpleRNN(32))
    model.add(Dense(1, activation='sigmoid'))

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
from fastrnn.layers import Embedding, SimpleRNN, Dense
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
model.add(Embedding(max_features, 32))
model.add(SimpleRNN(32))
model.add(Dense(1, activation='sigmoid'))

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
