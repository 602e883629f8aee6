/*
 * The store's hot loops in C: decoding and encoding v2 records sections, murmur2 (of
 * one key, and the rows of a list of keys by partition), and finding the integers of a
 * JSON text that do not fit 64 bits (wide_integers, and wide_integer_rows of many texts).
 *
 * Each function has a reference implementation in Python (headwater.store._records,
 * _partitioner and _json_numbers); this module is an optional accelerator of exactly those, built when a C
 * compiler is present at install time, and the tests hold the two to the same results.
 *
 * Decoding: when decode_section returns a list, the Python decoder would have returned an
 * equal list; whenever the section is inconsistent in any way (or a value would not fit
 * 64 bits), it returns None and the caller runs the Python decoder, which says what is
 * wrong and where. So every error message comes from one place, and this file only has
 * to be right about valid data. Every read is bounds-checked before it happens.
 *
 * Encoding: encode_section writes what the Python encoder writes, or returns None for
 * input that is not of the exact types it takes, which then goes the Python way.
 *
 * Syncing: start_fsync runs a flush's fsyncs in a thread that never takes the GIL (one
 * of a few kept for the purpose), and says it is done by writing the outcome to a pipe
 * the event loop waits on (see headwater.store._fsync for why).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* A varint of at most max_bytes bytes at *pos, zigzag-decoded into *out. Returns 0 when
 * it runs past the data, is longer than max_bytes, or does not fit 64 bits. */
static inline int
read_varint(const unsigned char *data, Py_ssize_t size, Py_ssize_t *pos, int max_bytes,
            int64_t *out)
{
    uint64_t result = 0;
    Py_ssize_t p = *pos;
    for (int i = 0; i < max_bytes; i++) {
        if (p >= size) {
            return 0;
        }
        unsigned char byte = data[p++];
        uint64_t bits = byte & 0x7F;
        if (i == 9 && bits > 1) {
            return 0; /* the Python decoder's value would exceed 64 bits */
        }
        result |= bits << (7 * i);
        if (byte < 0x80) {
            *pos = p;
            *out = (int64_t)((result >> 1) ^ (~(result & 1) + 1));
            return 1;
        }
    }
    return 0;
}

/* A nullable byte string (varint length, -1: None) at *pos, as a new reference in *out.
 * Returns 0 if it is malformed or runs past `end`, -1 on a Python error. */
static inline int
read_nullable(const unsigned char *data, Py_ssize_t end, Py_ssize_t *pos, PyObject **out)
{
    int64_t length;
    if (!read_varint(data, end, pos, 5, &length)) {
        return 0;
    }
    if (length < 0) {
        if (length != -1) {
            return 0;
        }
        Py_INCREF(Py_None);
        *out = Py_None;
        return 1;
    }
    if (length > end - *pos) {
        return 0;
    }
    *out = PyBytes_FromStringAndSize((const char *)data + *pos, (Py_ssize_t)length);
    if (*out == NULL) {
        return -1;
    }
    *pos += (Py_ssize_t)length;
    return 1;
}

/* The header names last decoded at each of the first few places of a record's headers:
 * records of one topic mostly carry the same names in the same places (the runtime's
 * lineage header first), so each is decoded once and shared, not made per record. */
#define NAME_SLOTS 4
static PyObject *last_names[NAME_SLOTS];

/* The header name of `size` bytes at data, as a new reference (NULL on a Python error,
 * a UnicodeDecodeError among them), shared with the last one decoded at place i. */
static PyObject *
header_name(const unsigned char *data, Py_ssize_t size, Py_ssize_t i)
{
    PyObject *last = i < NAME_SLOTS ? last_names[i] : NULL;
    if (last != NULL) {
        Py_ssize_t length;
        const char *utf8 = PyUnicode_AsUTF8AndSize(last, &length);
        if (utf8 == NULL) {
            return NULL;
        }
        if (length == size && memcmp(utf8, data, (size_t)size) == 0) {
            Py_INCREF(last);
            return last;
        }
    }
    PyObject *name = PyUnicode_DecodeUTF8((const char *)data, size, "strict");
    if (name != NULL && i < NAME_SLOTS) {
        Py_INCREF(name);
        Py_XSETREF(last_names[i], name);
    }
    return name;
}

/* The headers of one record at *pos (count first), as a new tuple in *out.
 * Returns 0 if malformed, -1 on a Python error. */
static int
read_headers(const unsigned char *data, Py_ssize_t end, Py_ssize_t *pos, PyObject *empty,
             PyObject **out)
{
    int64_t count;
    if (!read_varint(data, end, pos, 5, &count)) {
        return 0;
    }
    if (count == 0) {
        Py_INCREF(empty);
        *out = empty;
        return 1;
    }
    if (count < 0 || count > (end - *pos) / 2) {
        return 0;
    }
    PyObject *headers = PyTuple_New((Py_ssize_t)count);
    if (headers == NULL) {
        return -1;
    }
    for (Py_ssize_t i = 0; i < (Py_ssize_t)count; i++) {
        int64_t size;
        if (!read_varint(data, end, pos, 5, &size) || size < 0 || size > end - *pos) {
            Py_DECREF(headers);
            return 0;
        }
        PyObject *name = header_name(data + *pos, (Py_ssize_t)size, i);
        if (name == NULL) {
            Py_DECREF(headers);
            if (PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
                PyErr_Clear();
                return 0;
            }
            return -1;
        }
        *pos += (Py_ssize_t)size;
        PyObject *value;
        int ok = read_nullable(data, end, pos, &value);
        if (ok != 1) {
            Py_DECREF(name);
            Py_DECREF(headers);
            return ok;
        }
        PyObject *pair = PyTuple_New(2);
        if (pair == NULL) {
            Py_DECREF(name);
            Py_DECREF(value);
            Py_DECREF(headers);
            return -1;
        }
        PyTuple_SET_ITEM(pair, 0, name);
        PyTuple_SET_ITEM(pair, 1, value);
        PyTuple_SET_ITEM(headers, i, pair);
    }
    *out = headers;
    return 1;
}

/* Builds one record of `record_type` (a tuple subclass of five fields) from new references,
 * which it steals. */
static PyObject *
new_record(PyTypeObject *record_type, PyObject *fields[5])
{
    PyObject *record = record_type->tp_alloc(record_type, 5);
    if (record == NULL) {
        for (int i = 0; i < 5; i++) {
            Py_DECREF(fields[i]);
        }
        return NULL;
    }
    for (int i = 0; i < 5; i++) {
        PyTuple_SET_ITEM(record, i, fields[i]);
    }
    return record;
}

PyDoc_STRVAR(decode_section_doc,
"decode_section(buffer, start, end, count, base_offset, timestamp_base, delta_mask,\n"
"               record_type, empty)\n"
"--\n\n"
"Decode the ``count`` records that fill ``buffer[start:end]`` into a list of\n"
"``record_type`` tuples (offset, timestamp, key, value, headers), or return None if the\n"
"section is inconsistent. A record's timestamp is ``timestamp_base + (delta &\n"
"delta_mask)``; ``empty`` is the headers of a record that has none.");

static PyObject *
decode_records_in(const unsigned char *data, Py_ssize_t size, Py_ssize_t count,
                  long long base_offset, long long timestamp_base, long long delta_mask,
                  PyTypeObject *record_type, PyObject *empty, PyObject *columns[4]);

/* The arguments both decoders share: buffer, start, end, count, base_offset,
 * timestamp_base and delta_mask, in args[0..6]; then decode_records_in. */
static PyObject *
decode_arguments(PyObject *const *args, PyTypeObject *record_type, PyObject *empty,
                 PyObject *columns[4])
{
    Py_ssize_t start = PyLong_AsSsize_t(args[1]);
    Py_ssize_t end = PyLong_AsSsize_t(args[2]);
    Py_ssize_t count = PyLong_AsSsize_t(args[3]);
    if (PyErr_Occurred()) {
        return NULL;
    }
    int overflow_offset = 0, overflow_timestamp = 0, overflow_mask = 0;
    long long base_offset = PyLong_AsLongLongAndOverflow(args[4], &overflow_offset);
    long long timestamp_base = PyLong_AsLongLongAndOverflow(args[5], &overflow_timestamp);
    long long delta_mask = PyLong_AsLongLongAndOverflow(args[6], &overflow_mask);
    if (PyErr_Occurred()) {
        return NULL;
    }
    if (overflow_offset || overflow_timestamp || overflow_mask) {
        Py_RETURN_NONE;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    PyObject *result;
    if (start < 0 || end < start || end > view.len || count < 0) {
        Py_INCREF(Py_None);
        result = Py_None;
    } else {
        result = decode_records_in((const unsigned char *)view.buf + start, end - start, count,
                                   base_offset, timestamp_base, delta_mask, record_type, empty,
                                   columns);
    }
    PyBuffer_Release(&view);
    return result;
}

static PyObject *
decode_section(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 9) {
        PyErr_SetString(PyExc_TypeError, "decode_section takes 9 arguments");
        return NULL;
    }
    if (!PyType_Check(args[7]) || !PyType_IsSubtype((PyTypeObject *)args[7], &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "record_type must be a tuple subclass");
        return NULL;
    }
    return decode_arguments(args, (PyTypeObject *)args[7], args[8], NULL);
}

/* Shortens each of the lists in `columns` back to its length in `lengths`. */
static void
truncate_columns(PyObject *columns[4], Py_ssize_t lengths[4])
{
    for (int i = 0; i < 4; i++) {
        if (PyList_SetSlice(columns[i], lengths[i], PY_SSIZE_T_MAX, NULL) < 0) {
            PyErr_Clear(); /* cannot fail for a list shortened to a valid length */
        }
    }
}

/* Decodes `count` records filling data[0:size]. With columns == NULL, returns a new list
 * of `record_type` tuples, or None if the section is inconsistent. Otherwise appends each
 * record's timestamp, key, value and headers to the four lists of `columns` and returns
 * True; or, having appended nothing, False if the offsets are not base_offset, +1, +2...
 * (the caller then decodes records), or None if the section is inconsistent. */
static PyObject *
decode_records_in(const unsigned char *data, Py_ssize_t size, Py_ssize_t count,
                  long long base_offset, long long timestamp_base, long long delta_mask,
                  PyTypeObject *record_type, PyObject *empty, PyObject *columns[4])
{
    if (count > size / 7) { /* a record takes at least seven bytes */
        Py_RETURN_NONE;
    }
    PyObject *records = NULL;
    Py_ssize_t lengths[4] = {0, 0, 0, 0};
    if (columns == NULL) {
        records = PyList_New(count);
        if (records == NULL) {
            return NULL;
        }
    } else {
        for (int i = 0; i < 4; i++) {
            lengths[i] = PyList_GET_SIZE(columns[i]);
        }
    }
    PyObject *result = Py_None; /* what an inconsistent section returns */
    Py_ssize_t pos = 0;
    PyObject *last_timestamp = NULL; /* borrowed: held by `records` or the timestamps */
    long long last_timestamp_value = 0;
    for (Py_ssize_t index = 0; index < count; index++) {
        int64_t length, timestamp_delta, offset_delta;
        if (!read_varint(data, size, &pos, 5, &length) || length < 0 || length > size - pos) {
            goto inconsistent;
        }
        Py_ssize_t end = pos + (Py_ssize_t)length;
        pos += 1; /* record attributes: no bits are defined */
        if (!read_varint(data, end, &pos, 10, &timestamp_delta) ||
            !read_varint(data, end, &pos, 5, &offset_delta)) {
            goto inconsistent;
        }
        long long timestamp, offset;
        if (__builtin_add_overflow(timestamp_base, timestamp_delta & delta_mask, &timestamp) ||
            __builtin_add_overflow(base_offset, offset_delta, &offset)) {
            goto inconsistent;
        }
        PyObject *fields[5] = {NULL, NULL, NULL, NULL, NULL};
        int ok = read_nullable(data, end, &pos, &fields[2]);
        if (ok == 1) {
            ok = read_nullable(data, end, &pos, &fields[3]);
        }
        if (ok == 1) {
            ok = pos < end ? read_headers(data, end, &pos, empty, &fields[4]) : 0;
        }
        if (ok == 1 && pos != end) {
            ok = 0;
        }
        if (ok == 1) {
            /* Columns leave offsets implicit; they must then be dense. */
            if (columns == NULL) {
                fields[0] = PyLong_FromLongLong(offset);
            } else if (offset_delta != index) {
                ok = 2;
            }
        }
        if (ok == 1) {
            /* Records of a batch often share a timestamp (all of them under log-append
             * time): they share its int object too. */
            if (last_timestamp != NULL && timestamp == last_timestamp_value) {
                Py_INCREF(last_timestamp);
                fields[1] = last_timestamp;
            } else {
                fields[1] = PyLong_FromLongLong(timestamp);
                last_timestamp = fields[1];
                last_timestamp_value = timestamp;
            }
            if ((columns == NULL && fields[0] == NULL) || fields[1] == NULL) {
                ok = -1;
            }
        }
        if (ok == 1 && columns != NULL) {
            for (int i = 0; i < 4 && ok == 1; i++) {
                if (PyList_Append(columns[i], fields[i + 1]) < 0) {
                    ok = -1;
                }
            }
            for (int i = 1; i < 5; i++) {
                Py_DECREF(fields[i]);
            }
            if (ok == 1) {
                continue;
            }
            fields[1] = fields[2] = fields[3] = fields[4] = NULL;
        }
        if (ok != 1) {
            for (int i = 0; i < 5; i++) {
                Py_XDECREF(fields[i]);
            }
            if (ok == 0) {
                goto inconsistent;
            }
            if (ok == 2) {
                result = Py_False;
                goto inconsistent;
            }
            goto error;
        }
        PyObject *record = new_record(record_type, fields);
        if (record == NULL) {
            goto error;
        }
        PyList_SET_ITEM(records, index, record);
    }
    if (pos != size) {
        goto inconsistent;
    }
    if (columns == NULL) {
        return records;
    }
    Py_RETURN_TRUE;

inconsistent:
    /* unfilled slots of `records` are NULL, which list deallocation skips */
    Py_XDECREF(records);
    if (columns != NULL) {
        truncate_columns(columns, lengths);
    }
    Py_INCREF(result);
    return result;
error:
    Py_XDECREF(records);
    if (columns != NULL) {
        truncate_columns(columns, lengths);
    }
    return NULL;
}

PyDoc_STRVAR(decode_columns_doc,
"decode_columns(buffer, start, end, count, base_offset, timestamp_base, delta_mask,\n"
"               empty, timestamps, keys, values, headers)\n"
"--\n\n"
"Decode the ``count`` records that fill ``buffer[start:end]`` onto the ends of four\n"
"lists: each record's timestamp, key, value and headers. Returns True; or, appending\n"
"nothing, False if the offsets are not ``base_offset`` and up one by one (then decode\n"
"records instead), or None if the section is inconsistent (as decode_section).");

static PyObject *
decode_columns(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 12) {
        PyErr_SetString(PyExc_TypeError, "decode_columns takes 12 arguments");
        return NULL;
    }
    PyObject *columns[4] = {args[8], args[9], args[10], args[11]};
    for (int i = 0; i < 4; i++) {
        if (!PyList_CheckExact(columns[i])) {
            PyErr_SetString(PyExc_TypeError, "the columns must be lists");
            return NULL;
        }
    }
    return decode_arguments(args, NULL, args[7], columns);
}

/* -- encoding ------------------------------------------------------------------------- */

static inline Py_ssize_t
varint_size(int64_t value)
{
    uint64_t zigzag = ((uint64_t)value << 1) ^ (uint64_t)(value >> 63);
    Py_ssize_t size = 1;
    while (zigzag > 0x7F) {
        zigzag >>= 7;
        size++;
    }
    return size;
}

static inline unsigned char *
write_varint(unsigned char *out, int64_t value)
{
    uint64_t zigzag = ((uint64_t)value << 1) ^ (uint64_t)(value >> 63);
    while (zigzag > 0x7F) {
        *out++ = (unsigned char)(zigzag & 0x7F) | 0x80;
        zigzag >>= 7;
    }
    *out++ = (unsigned char)zigzag;
    return out;
}

/* The encoded size of a nullable byte string, or -1 if `item` is neither bytes nor None. */
static inline Py_ssize_t
nullable_size(PyObject *item)
{
    if (item == Py_None) {
        return 1;
    }
    if (!PyBytes_CheckExact(item)) {
        return -1;
    }
    Py_ssize_t size = PyBytes_GET_SIZE(item);
    return varint_size(size) + size;
}

static inline unsigned char *
write_nullable(unsigned char *out, PyObject *item)
{
    if (item == Py_None) {
        *out++ = 0x01;
        return out;
    }
    Py_ssize_t size = PyBytes_GET_SIZE(item);
    out = write_varint(out, size);
    memcpy(out, PyBytes_AS_STRING(item), (size_t)size);
    return out + size;
}

static inline unsigned long long
magnitude_of(long long value)
{
    return value < 0 ? 0ULL - (unsigned long long)value : (unsigned long long)value;
}

/* The number of decimal digits of `value` (with its sign). */
static inline Py_ssize_t
decimal_size(long long value)
{
    unsigned long long magnitude = magnitude_of(value);
    Py_ssize_t size = value < 0 ? 2 : 1;
    while (magnitude >= 10) {
        magnitude /= 10;
        size++;
    }
    return size;
}

static inline unsigned char *
write_decimal(unsigned char *out, long long value, Py_ssize_t size)
{
    unsigned long long magnitude = magnitude_of(value);
    unsigned char *end = out + size;
    unsigned char *digit = end;
    do {
        *--digit = (unsigned char)('0' + magnitude % 10);
        magnitude /= 10;
    } while (magnitude);
    if (value < 0) {
        *--digit = '-';
    }
    return end;
}

/* More header columns than this go the Python way (the runtime passes one). */
#define MAX_HEADER_COLUMNS 16

/* A column argument: None, or a list of exactly `count` items. */
static inline int
column_ok(PyObject *column, Py_ssize_t count)
{
    return column == Py_None || (PyList_CheckExact(column) && PyList_GET_SIZE(column) == count);
}

/* A header every record carries, unpacked once per batch: its UTF-8 name, and either a
 * list of values or (prefix, list of numbers, base) for prefix + decimal(base + number). */
typedef struct {
    PyObject *name;
    PyObject *values; /* NULL for a numbered column */
    PyObject *prefix;
    PyObject *numbers;
    long long base;
} header_column;

/* Walks one record's fields; with out == NULL it only measures. Returns the size of the
 * record's body (after its length varint), or -1 if a field is not of an encodable type. */
static Py_ssize_t
record_body(unsigned char *out, Py_ssize_t index, PyObject *values, PyObject *keys,
            int64_t timestamp_delta, const header_column *header_columns, Py_ssize_t columns,
            PyObject *headers)
{
    unsigned char *start = out;
    Py_ssize_t size = 1 + varint_size(timestamp_delta) + varint_size(index);
    PyObject *key = keys == Py_None ? Py_None : PyList_GET_ITEM(keys, index);
    PyObject *value = PyList_GET_ITEM(values, index);
    Py_ssize_t key_size = nullable_size(key), value_size = nullable_size(value);
    if (key_size < 0 || value_size < 0) {
        return -1;
    }
    size += key_size + value_size;
    PyObject *extra = headers == Py_None ? NULL : PyList_GET_ITEM(headers, index);
    if (extra != NULL && !PyTuple_CheckExact(extra) && !PyList_CheckExact(extra)) {
        return -1;
    }
    Py_ssize_t extra_count = extra == NULL ? 0 : PySequence_Fast_GET_SIZE(extra);
    size += varint_size(columns + extra_count);
    if (out != NULL) {
        *out++ = 0x00; /* attributes */
        out = write_varint(out, timestamp_delta);
        out = write_varint(out, index);
        out = write_nullable(out, key);
        out = write_nullable(out, value);
        out = write_varint(out, columns + extra_count);
    }
    for (Py_ssize_t c = 0; c < columns; c++) {
        const header_column *column = &header_columns[c];
        Py_ssize_t name_size = PyBytes_GET_SIZE(column->name);
        size += varint_size(name_size) + name_size;
        if (out != NULL) {
            out = write_varint(out, name_size);
            memcpy(out, PyBytes_AS_STRING(column->name), (size_t)name_size);
            out += name_size;
        }
        if (column->values != NULL) {
            PyObject *header_value = PyList_GET_ITEM(column->values, index);
            Py_ssize_t header_value_size = nullable_size(header_value);
            if (header_value_size < 0) {
                return -1;
            }
            size += header_value_size;
            if (out != NULL) {
                out = write_nullable(out, header_value);
            }
            continue;
        }
        PyObject *number = PyList_GET_ITEM(column->numbers, index);
        if (!PyLong_CheckExact(number)) {
            return -1;
        }
        int overflow = 0;
        long long value = PyLong_AsLongLongAndOverflow(number, &overflow);
        if (overflow || __builtin_add_overflow(value, column->base, &value)) {
            return -1;
        }
        Py_ssize_t prefix_size = PyBytes_GET_SIZE(column->prefix);
        Py_ssize_t digits = decimal_size(value);
        size += varint_size(prefix_size + digits) + prefix_size + digits;
        if (out != NULL) {
            out = write_varint(out, prefix_size + digits);
            memcpy(out, PyBytes_AS_STRING(column->prefix), (size_t)prefix_size);
            out = write_decimal(out + prefix_size, value, digits);
        }
    }
    for (Py_ssize_t h = 0; h < extra_count; h++) {
        PyObject *pair = PySequence_Fast_GET_ITEM(extra, h);
        if (!PyTuple_CheckExact(pair) || PyTuple_GET_SIZE(pair) != 2 ||
            !PyUnicode_CheckExact(PyTuple_GET_ITEM(pair, 0))) {
            return -1;
        }
        Py_ssize_t name_size;
        const char *name = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(pair, 0), &name_size);
        if (name == NULL) {
            PyErr_Clear(); /* e.g. a lone surrogate: the Python encoder reports it */
            return -1;
        }
        PyObject *header_value = PyTuple_GET_ITEM(pair, 1);
        Py_ssize_t header_value_size = nullable_size(header_value);
        if (header_value_size < 0) {
            return -1;
        }
        size += varint_size(name_size) + name_size + header_value_size;
        if (out != NULL) {
            out = write_varint(out, name_size);
            memcpy(out, name, (size_t)name_size);
            out = write_nullable(out + name_size, header_value);
        }
    }
    if (out != NULL && out - start != size) {
        return -1; /* cannot happen: measuring and writing walk the same fields */
    }
    return size;
}

PyDoc_STRVAR(encode_section_doc,
"encode_section(values, keys, timestamps, base_timestamp, header_columns, headers)\n"
"--\n\n"
"Return the records section of a batch of ``len(values)`` records (offset deltas from\n"
"0), or None if an argument is not of the exact types below (the caller's Python\n"
"encoder then handles it). ``values``: a list of bytes or None; ``keys``: such a list,\n"
"or None for all-null keys; ``timestamps``: a list of ints (deltas from\n"
"``base_timestamp``), or None for all equal to it; ``header_columns``: a tuple of\n"
"(UTF-8 name, column) pairs, a header every record carries, its values a list of bytes\n"
"or None, or (prefix, list of ints, base) for prefix + the decimal digits of base + int;\n"
"``headers``: None, or a list of each record's further (str, bytes or None) headers.");

static PyObject *
encode_section(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "encode_section takes 6 arguments");
        return NULL;
    }
    PyObject *values = args[0], *keys = args[1], *timestamps = args[2];
    PyObject *header_columns = args[4], *headers = args[5];
    if (!PyList_CheckExact(values)) {
        Py_RETURN_NONE;
    }
    Py_ssize_t count = PyList_GET_SIZE(values);
    if (!column_ok(keys, count) || !column_ok(timestamps, count) ||
        !column_ok(headers, count) || !PyTuple_CheckExact(header_columns)) {
        Py_RETURN_NONE;
    }
    Py_ssize_t columns = PyTuple_GET_SIZE(header_columns);
    header_column unpacked[MAX_HEADER_COLUMNS];
    if (columns > MAX_HEADER_COLUMNS) {
        Py_RETURN_NONE;
    }
    for (Py_ssize_t c = 0; c < columns; c++) {
        PyObject *pair = PyTuple_GET_ITEM(header_columns, c);
        if (!PyTuple_CheckExact(pair) || PyTuple_GET_SIZE(pair) != 2 ||
            !PyBytes_CheckExact(PyTuple_GET_ITEM(pair, 0))) {
            Py_RETURN_NONE;
        }
        header_column *column = &unpacked[c];
        column->name = PyTuple_GET_ITEM(pair, 0);
        PyObject *given = PyTuple_GET_ITEM(pair, 1);
        if (PyList_CheckExact(given) && PyList_GET_SIZE(given) == count) {
            column->values = given;
            continue;
        }
        int base_overflow = 0;
        if (!PyTuple_CheckExact(given) || PyTuple_GET_SIZE(given) != 3 ||
            !PyBytes_CheckExact(PyTuple_GET_ITEM(given, 0)) ||
            !PyList_CheckExact(PyTuple_GET_ITEM(given, 1)) ||
            PyList_GET_SIZE(PyTuple_GET_ITEM(given, 1)) != count ||
            !PyLong_CheckExact(PyTuple_GET_ITEM(given, 2))) {
            Py_RETURN_NONE;
        }
        column->values = NULL;
        column->prefix = PyTuple_GET_ITEM(given, 0);
        column->numbers = PyTuple_GET_ITEM(given, 1);
        column->base = PyLong_AsLongLongAndOverflow(PyTuple_GET_ITEM(given, 2), &base_overflow);
        if (base_overflow) {
            Py_RETURN_NONE;
        }
    }
    int overflow = 0;
    long long base_timestamp = PyLong_AsLongLongAndOverflow(args[3], &overflow);
    if (PyErr_Occurred()) {
        return NULL;
    }
    if (overflow || count == 0) {
        Py_RETURN_NONE;
    }
    int64_t *deltas = PyMem_Malloc(sizeof(int64_t) * (size_t)count);
    Py_ssize_t *sizes = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)count);
    PyObject *section = NULL;
    if (deltas == NULL || sizes == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t total = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        deltas[i] = 0;
        if (timestamps != Py_None) {
            PyObject *timestamp = PyList_GET_ITEM(timestamps, i);
            if (!PyLong_CheckExact(timestamp)) {
                goto unencodable;
            }
            long long value = PyLong_AsLongLongAndOverflow(timestamp, &overflow);
            if (overflow || (value == -1 && PyErr_Occurred()) ||
                __builtin_sub_overflow(value, base_timestamp, &deltas[i])) {
                PyErr_Clear();
                goto unencodable;
            }
        }
        sizes[i] = record_body(NULL, i, values, keys, deltas[i], unpacked, columns, headers);
        if (sizes[i] < 0 || sizes[i] > INT32_MAX) {
            goto unencodable;
        }
        total += varint_size(sizes[i]) + sizes[i];
        if (total > PY_SSIZE_T_MAX / 2) {
            goto unencodable;
        }
    }
    section = PyBytes_FromStringAndSize(NULL, total);
    if (section == NULL) {
        goto done;
    }
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(section);
    for (Py_ssize_t i = 0; i < count; i++) {
        out = write_varint(out, sizes[i]);
        if (record_body(out, i, values, keys, deltas[i], unpacked, columns, headers) !=
            sizes[i]) {
            Py_CLEAR(section);
            goto unencodable;
        }
        out += sizes[i];
    }
    goto done;

unencodable:
    Py_INCREF(Py_None);
    section = Py_None;
done:
    PyMem_Free(deltas);
    PyMem_Free(sizes);
    return section;
}

/* -- partitioning ----------------------------------------------------------------------- */

PyDoc_STRVAR(murmur2_doc,
"murmur2(data, /)\n"
"--\n\n"
"Kafka's murmur2 of ``data`` (a bytes-like object) as a signed 32-bit int: the C build of\n"
"headwater.store._partitioner.murmur2.");

/* Kafka's murmur2 of data[0:length], as the unsigned bits of Java's int result. */
static uint32_t
murmur2_bits(const unsigned char *bytes, Py_ssize_t length)
{
    const uint32_t m = 0x5BD1E995;
    uint32_t h = 0x9747B28CU ^ (uint32_t)length;
    Py_ssize_t words = length / 4;
    for (Py_ssize_t i = 0; i < words; i++) {
        const unsigned char *w = bytes + 4 * i;
        uint32_t k = (uint32_t)w[0] | (uint32_t)w[1] << 8 | (uint32_t)w[2] << 16 |
                     (uint32_t)w[3] << 24;
        k *= m;
        k ^= k >> 24;
        k *= m;
        h *= m;
        h ^= k;
    }
    const unsigned char *tail = bytes + 4 * words;
    switch (length & 3) {
    case 3:
        h ^= (uint32_t)tail[2] << 16;
        /* fall through */
    case 2:
        h ^= (uint32_t)tail[1] << 8;
        /* fall through */
    case 1:
        h ^= tail[0];
        h *= m;
    }
    h ^= h >> 13;
    h *= m;
    h ^= h >> 15;
    return h;
}

static PyObject *
murmur2(PyObject *module, PyObject *data)
{
    Py_buffer view;
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    uint32_t h = murmur2_bits(view.buf, view.len);
    PyBuffer_Release(&view);
    return PyLong_FromLong((long)(int32_t)h);
}

PyDoc_STRVAR(partition_rows_doc,
"partition_rows(keys, num_partitions, default, /)\n"
"--\n\n"
"The C build of headwater.store._partitioner.partition_rows for a list of bytes and\n"
"None; None for anything else (the caller then goes key by key).");

static PyObject *
partition_rows(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "partition_rows takes 3 arguments");
        return NULL;
    }
    PyObject *keys = args[0];
    long count = PyLong_AsLong(args[1]);
    if (count == -1 && PyErr_Occurred()) {
        return NULL;
    }
    long fallback = PyLong_AsLong(args[2]);
    if (fallback == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (!PyList_CheckExact(keys) || count < 1 || count > (1L << 20) || fallback < 0 ||
        fallback >= count) {
        Py_RETURN_NONE;
    }
    Py_ssize_t size = PyList_GET_SIZE(keys);
    /* Each partition's list of rows, and the partitions in the order first met. */
    PyObject **rows = PyMem_Calloc((size_t)count, sizeof(PyObject *));
    long *order = PyMem_Malloc((size_t)count * sizeof(long));
    PyObject *result = NULL;
    Py_ssize_t seen = 0;
    if (rows == NULL || order == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < size; i++) {
        PyObject *key = PyList_GET_ITEM(keys, i);
        long partition;
        if (key == Py_None) {
            partition = fallback;
        } else if (PyBytes_CheckExact(key)) {
            uint32_t h = murmur2_bits((const unsigned char *)PyBytes_AS_STRING(key),
                                      PyBytes_GET_SIZE(key));
            partition = (long)((h & 0x7FFFFFFFU) % (uint32_t)count);
        } else {
            result = Py_NewRef(Py_None);
            goto done;
        }
        if (rows[partition] == NULL) {
            rows[partition] = PyList_New(0);
            if (rows[partition] == NULL) {
                goto done;
            }
            order[seen++] = partition;
        }
        PyObject *index = PyLong_FromSsize_t(i);
        if (index == NULL || PyList_Append(rows[partition], index) < 0) {
            Py_XDECREF(index);
            goto done;
        }
        Py_DECREF(index);
    }
    PyObject *found = PyDict_New();
    if (found == NULL) {
        goto done;
    }
    for (Py_ssize_t s = 0; s < seen; s++) {
        PyObject *number = PyLong_FromLong(order[s]);
        if (number == NULL || PyDict_SetItem(found, number, rows[order[s]]) < 0) {
            Py_XDECREF(number);
            Py_DECREF(found);
            goto done;
        }
        Py_DECREF(number);
    }
    result = found;
done:
    if (rows != NULL) {
        for (long p = 0; p < count; p++) {
            Py_XDECREF(rows[p]);
        }
    }
    PyMem_Free(rows);
    PyMem_Free(order);
    return result;
}

/* -- syncing ---------------------------------------------------------------------------- */

/* One start_fsync call's work, owned by the thread that runs it, which frees it (and
 * closes wake_fd: the caller may stop waiting, and must then not reuse the descriptor's
 * number). */
typedef struct fsync_job {
    struct fsync_job *next;
    int wake_fd;
    Py_ssize_t count;
    int fds[];
} fsync_job;

static void
run_fsync_job(fsync_job *job)
{
    int32_t outcome = 0;
    for (Py_ssize_t i = 0; i < job->count; i++) {
        if (fsync(job->fds[i]) != 0) {
            outcome = errno;
            break;
        }
    }
    /* A pipe write of 4 bytes is atomic; the reader waits for it, so it cannot be full. */
    ssize_t written;
    do {
        written = write(job->wake_fd, &outcome, sizeof outcome);
    } while (written < 0 && errno == EINTR);
    close(job->wake_fd);
    free(job);
}

/* The syncing threads. Between jobs a thread waits on a condition variable for up to
 * SYNC_THREAD_IDLE_SECONDS, then exits: a new thread per job would cost its creation and,
 * on a busy machine, a wait of its own to be scheduled the first time (some 40 us of a
 * 300 us flush, measured), while a waiting one is woken at once. There is a thread for
 * every job queued at the same time, so the fsyncs of several partitions overlap. */
#define SYNC_THREAD_IDLE_SECONDS 10

static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pool_wakeup = PTHREAD_COND_INITIALIZER;
static fsync_job *queue_head;
static fsync_job *queue_tail;
static Py_ssize_t queued_jobs;
static Py_ssize_t idle_threads;

/* In a child process after fork(), the parent's threads do not exist: start afresh
 * (jobs queued at the fork belong to the parent, which runs them). */
static void
reset_pool_after_fork(void)
{
    pthread_mutex_init(&pool_lock, NULL);
    pthread_cond_init(&pool_wakeup, NULL);
    queue_head = queue_tail = NULL;
    queued_jobs = idle_threads = 0;
}

static void *
sync_thread(void *unused)
{
    (void)unused;
    pthread_mutex_lock(&pool_lock);
    for (;;) {
        while (queue_head == NULL) {
            /* The real-time clock: a jump of it only changes when an idle thread exits. */
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_sec += SYNC_THREAD_IDLE_SECONDS;
            idle_threads++;
            int waited = pthread_cond_timedwait(&pool_wakeup, &pool_lock, &until);
            idle_threads--;
            if (waited == ETIMEDOUT && queue_head == NULL) {
                pthread_mutex_unlock(&pool_lock);
                return NULL;
            }
        }
        fsync_job *job = queue_head;
        queue_head = job->next;
        if (queue_head == NULL) {
            queue_tail = NULL;
        }
        queued_jobs--;
        pthread_mutex_unlock(&pool_lock);
        run_fsync_job(job);
        pthread_mutex_lock(&pool_lock);
    }
}

static void
register_fork_handler(void)
{
    pthread_atfork(NULL, NULL, reset_pool_after_fork);
}

/* Start one more syncing thread; 0, or the error. */
static int
start_sync_thread(void)
{
    pthread_attr_t attr;
    int failed = pthread_attr_init(&attr);
    if (failed) {
        return failed;
    }
    failed = pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (!failed) {
        /* fsync needs little stack; the default (often 8 MiB) is address space only, but
         * a small one is cheaper to map. */
        pthread_attr_setstacksize(&attr, 64 * 1024);
        pthread_t thread;
        failed = pthread_create(&thread, &attr, sync_thread, NULL);
    }
    pthread_attr_destroy(&attr);
    return failed;
}

/* Queue ``job`` for a syncing thread, starting one if none is free. Returns 0, or the
 * error of starting a thread, in which case ``job`` is not queued and is the caller's. */
static int
submit_fsync_job(fsync_job *job)
{
    static pthread_once_t fork_handler = PTHREAD_ONCE_INIT;
    pthread_once(&fork_handler, register_fork_handler);
    job->next = NULL;
    pthread_mutex_lock(&pool_lock);
    fsync_job *before = queue_tail;
    if (before == NULL) {
        queue_head = job;
    } else {
        before->next = job;
    }
    queue_tail = job;
    queued_jobs++;
    int failed = queued_jobs <= idle_threads ? 0 : start_sync_thread();
    if (failed && idle_threads == 0) {
        /* No waiting thread is sure to take it: take it back (it is last in the queue). */
        if (before == NULL) {
            queue_head = NULL;
        } else {
            before->next = NULL;
        }
        queue_tail = before;
        queued_jobs--;
    } else {
        /* A waiting thread takes it, after the jobs queued before it if it had to be
         * shared (no new thread could be started). */
        pthread_cond_signal(&pool_wakeup);
        failed = 0;
    }
    pthread_mutex_unlock(&pool_lock);
    return failed;
}

/* A descriptor from a Python int: -1 with an exception set when it is not one. */
static int
as_fd(PyObject *number)
{
    long value = PyLong_AsLong(number);
    if (value == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (value < 0 || value > INT32_MAX) {
        PyErr_Format(PyExc_ValueError, "start_fsync: %ld is not a file descriptor", value);
        return -1;
    }
    return (int)value;
}

PyDoc_STRVAR(start_fsync_doc,
"start_fsync(fds, wake_fd, /)\n"
"--\n\n"
"fsync each descriptor of ``fds`` (a sequence of ints) in order, in a thread that does\n"
"not take the GIL (an idle one of the module's, else a new one); then write the outcome\n"
"to ``wake_fd`` (the write end of a pipe) as a 4-byte native int: 0, or the errno of the\n"
"first fsync that failed (the rest are not tried), and close ``wake_fd``, which the\n"
"thread owns once this returns. Returns at once. The descriptors must stay open until\n"
"the outcome is read.");

static PyObject *
start_fsync(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "start_fsync takes exactly 2 arguments");
        return NULL;
    }
    int wake_fd = as_fd(args[1]);
    if (wake_fd == -1) {
        return NULL;
    }
    PyObject *fds = PySequence_Fast(args[0], "start_fsync: fds must be a sequence");
    if (fds == NULL) {
        return NULL;
    }
    Py_ssize_t count = PySequence_Fast_GET_SIZE(fds);
    fsync_job *job = malloc(sizeof(fsync_job) + (size_t)count * sizeof(int));
    if (job == NULL) {
        Py_DECREF(fds);
        return PyErr_NoMemory();
    }
    job->wake_fd = wake_fd;
    job->count = count;
    for (Py_ssize_t i = 0; i < count; i++) {
        int fd = as_fd(PySequence_Fast_GET_ITEM(fds, i));
        if (fd == -1) {
            free(job);
            Py_DECREF(fds);
            return NULL;
        }
        job->fds[i] = fd;
    }
    Py_DECREF(fds);
    int failed = submit_fsync_job(job);
    if (failed) {
        free(job);
        errno = failed;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_RETURN_NONE;
}

/* -- wide integers in JSON text -------------------------------------------------------- */

PyDoc_STRVAR(wide_integers_doc,
"wide_integers(text, /)\n"
"--\n\n"
"Return whether ``text`` (bytes of valid JSON) holds an integer below -2**63 or above\n"
"2**64 - 1, which orjson reads as a float: the C build of\n"
"headwater.store._json_numbers.has_wide_integer.\n\n"
":raises TypeError: if ``text`` is not bytes.");

/* Whether the `count` digits at `digits` (no leading zeros: JSON has none) spell a
 * number above `limit`, itself `limit_count` digits long. */
static inline int
digits_above(const unsigned char *digits, Py_ssize_t count, const char *limit,
             Py_ssize_t limit_count)
{
    return count > limit_count || (count == limit_count && memcmp(digits, limit, count) > 0);
}

static inline int
is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

/* The fewest digits in a row that a JSON integer outside 64 bits has: 19 below -2**63,
 * 20 above 2**64 - 1. */
#define WIDE_RUN 19

/* Whether `n` bytes at `p` hold WIDE_RUN digits in a row anywhere (in strings too). Most
 * texts have no such run, and looking at every WIDE_RUN-th byte finds any there is (a run
 * of WIDE_RUN covers one of them), so a text is ruled out in a few comparisons. */
static int
has_digit_run(const unsigned char *p, Py_ssize_t n)
{
    for (Py_ssize_t i = WIDE_RUN - 1; i < n; i += WIDE_RUN) {
        if (!is_digit(p[i])) {
            continue;
        }
        /* A run of WIDE_RUN through i reaches i - 9 or i + 9: most shorter runs are ruled
         * out here, without walking them. */
        if ((i < 9 || !is_digit(p[i - 9])) && (i + 9 >= n || !is_digit(p[i + 9]))) {
            continue;
        }
        Py_ssize_t low = i, high = i + 1;
        while (low > 0 && is_digit(p[low - 1])) {
            low--;
        }
        while (high < n && is_digit(p[high])) {
            high++;
        }
        if (high - low >= WIDE_RUN) {
            return 1;
        }
        /* The next byte looked at lies past this run: it is shorter than WIDE_RUN. */
    }
    return 0;
}

/* Whether the JSON text of `n` bytes at `p` holds an integer outside 64 bits. */
static int
text_has_wide_integer(const unsigned char *p, Py_ssize_t n)
{
    if (!has_digit_run(p, n)) {
        return 0;
    }
    const unsigned char *end = p + n;
    while (p < end) {
        unsigned char c = *p;
        if (c == '"') { /* a string: on past its closing quote (an escape skips a byte) */
            p++;
            while (p < end) {
                unsigned char d = *p++;
                if (d == '\\') {
                    p++;
                } else if (d == '"') {
                    break;
                }
            }
            continue;
        }
        if (c != '-' && !is_digit(c)) {
            p++;
            continue;
        }
        int negative = c == '-';
        const unsigned char *digits = p + negative, *q = digits;
        while (q < end && is_digit(*q)) {
            q++;
        }
        int fraction = q < end && (*q == '.' || *q == 'e' || *q == 'E');
        if (!fraction && (negative ? digits_above(digits, q - digits, "9223372036854775808", 19)
                                   : digits_above(digits, q - digits, "18446744073709551615", 20))) {
            return 1;
        }
        /* The rest of the number: its fraction and exponent. */
        while (q < end && (is_digit(*q) || *q == '.' || *q == 'e' || *q == 'E' || *q == '+' ||
                           *q == '-')) {
            q++;
        }
        p = q;
    }
    return 0;
}

static PyObject *
wide_integers(PyObject *module, PyObject *text)
{
    if (!PyBytes_Check(text)) {
        PyErr_Format(PyExc_TypeError, "wide_integers takes bytes, not %.100s",
                     Py_TYPE(text)->tp_name);
        return NULL;
    }
    return PyBool_FromLong(text_has_wide_integer(
        (const unsigned char *)PyBytes_AS_STRING(text), PyBytes_GET_SIZE(text)));
}

PyDoc_STRVAR(wide_integer_rows_doc,
"wide_integer_rows(texts, /)\n"
"--\n\n"
"Return the indexes of the texts (a list of bytes of valid JSON) that hold an integer\n"
"orjson reads as a float, in order: the C build of\n"
"headwater.store._json_numbers.wide_integer_rows.\n\n"
":raises TypeError: if ``texts`` is not a list of bytes.");

static PyObject *
wide_integer_rows(PyObject *module, PyObject *texts)
{
    if (!PyList_Check(texts)) {
        PyErr_Format(PyExc_TypeError, "wide_integer_rows takes a list, not %.100s",
                     Py_TYPE(texts)->tp_name);
        return NULL;
    }
    PyObject *rows = PyList_New(0);
    if (rows == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(texts); i++) {
        PyObject *text = PyList_GET_ITEM(texts, i);
        if (!PyBytes_Check(text)) {
            Py_DECREF(rows);
            PyErr_Format(PyExc_TypeError, "wide_integer_rows takes bytes, not %.100s",
                         Py_TYPE(text)->tp_name);
            return NULL;
        }
        if (!text_has_wide_integer((const unsigned char *)PyBytes_AS_STRING(text),
                                   PyBytes_GET_SIZE(text))) {
            continue;
        }
        PyObject *row = PyLong_FromSsize_t(i);
        if (row == NULL || PyList_Append(rows, row) < 0) {
            Py_XDECREF(row);
            Py_DECREF(rows);
            return NULL;
        }
        Py_DECREF(row);
    }
    return rows;
}

static PyMethodDef speedups_methods[] = {
    {"decode_section", (PyCFunction)(void (*)(void))decode_section, METH_FASTCALL,
     decode_section_doc},
    {"decode_columns", (PyCFunction)(void (*)(void))decode_columns, METH_FASTCALL,
     decode_columns_doc},
    {"encode_section", (PyCFunction)(void (*)(void))encode_section, METH_FASTCALL,
     encode_section_doc},
    {"murmur2", (PyCFunction)murmur2, METH_O, murmur2_doc},
    {"partition_rows", (PyCFunction)(void (*)(void))partition_rows, METH_FASTCALL,
     partition_rows_doc},
    {"start_fsync", (PyCFunction)(void (*)(void))start_fsync, METH_FASTCALL, start_fsync_doc},
    {"wide_integer_rows", (PyCFunction)wide_integer_rows, METH_O, wide_integer_rows_doc},
    {"wide_integers", (PyCFunction)wide_integers, METH_O, wide_integers_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "headwater.store._speedups",
    .m_doc = "The store's hot loops in C (optional; see headwater.store._records).",
    .m_size = 0,
    .m_methods = speedups_methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModuleDef_Init(&speedups_module);
}
