# The dotsocr gateway, as `dotsocr compose` runs it next to vLLM:
#   docker build -t dotsocr-gateway . && docker run -p 8080:8080 \
#     -e DOTSOCR_SERVER_URL=http://HOST:8000 dotsocr-gateway
# Settings are DOTSOCR_* variables (see `dotsocr gateway --help`); jobs live in /data.
# The same image runs `dotsocr worker` beside gateways sharing a PostgreSQL job store.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# Only what the package build needs, so the image does not change with tests or docs.
COPY pyproject.toml README.md dots_ocr_client.py ./
COPY src ./src
# rapid-layout asks for OpenCV with its GUI (it needs libGL, absent here) and rapidocr for
# the headless build; both write the same cv2 package, so the headless one is put back.
RUN pip install ".[cluster]" \
    && pip uninstall -y opencv-python \
    && pip install --force-reinstall --no-deps opencv-python-headless \
    && python -c "import cv2, rapidocr, rapid_layout" \
    && useradd --create-home --uid 1000 dotsocr \
    && mkdir /data && chown dotsocr /data

USER dotsocr
WORKDIR /home/dotsocr
ENV DOTSOCR_DATA_DIR=/data
VOLUME /data
EXPOSE 8080
CMD ["dotsocr", "gateway", "--host", "0.0.0.0"]
